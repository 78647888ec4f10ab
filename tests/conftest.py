"""Shared fixtures. Each family lives in its own module beside this file:

- ``fixtures_sim``: the gateway simulator over HTTP on loopback (``simulator``, ``make_simulator``)
- ``fixtures_db``: results databases (``db_url`` parametrised over SQLite, PostgreSQL, MariaDB)
- ``fixtures_cli``: running the CLI in-process and as the installed console script
"""

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
