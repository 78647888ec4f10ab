"""Shared fixtures. Each family lives in its own module beside this file:

- ``fixtures_sim``: the gateway simulator over HTTP on loopback (``simulator``, ``make_simulator``)
- ``fixtures_db``: results databases (``db_url`` parametrised over SQLite, PostgreSQL, MariaDB)
- ``fixtures_cli``: running the CLI in-process and as the installed console script
"""

from fixtures_cli import *  # noqa: F403
from fixtures_db import *  # noqa: F403
from fixtures_sim import *  # noqa: F403
