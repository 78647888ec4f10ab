"""Shared fixtures. Each family lives in its own module beside this file:

- ``fixtures_sim``: the gateway simulator over HTTP on loopback (``simulator``, ``make_simulator``)
- ``fixtures_db``: results databases (``db_url`` parametrised over SQLite, PostgreSQL, MariaDB)
- ``fixtures_cli``: running the CLI in-process and as the installed console script
"""

import os
from collections.abc import Iterator

import pytest
from fixtures_cli import *  # noqa: F403
from fixtures_db import *  # noqa: F403
from fixtures_sim import *  # noqa: F403


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Each test starts with no known secret: ``redact.SECRETS`` is process-wide, and one test's
    one-letter password would blank letters out of the next test's log lines."""
    from batch_sender import redact

    redact.SECRETS.forget_all()
    yield
    redact.SECRETS.forget_all()


@pytest.fixture(autouse=True, scope="session")
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default results database lives under $XDG_STATE_HOME: a temporary one, so a test
    that forgets --db (or a subprocess) never writes to the real home directory."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before
