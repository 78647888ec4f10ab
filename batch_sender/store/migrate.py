"""Alembic, configured in code: upgrade/downgrade the results schema on an open connection.

No alembic.ini is needed at run time: the script location is the ``batch_sender.migrations``
package directory, so an installed tool can migrate its own database (``batch-sender db upgrade``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

__all__ = ["MIGRATIONS_DIR", "config", "current", "downgrade", "head", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_NAME = "batch_sender_migrate"
_PG_LOCK_KEY = 0x6261746368  # "batch": advisory lock id serialising concurrent upgrades
_MYSQL_LOCK_TIMEOUT_S = 300


def config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for our migrations, running on ``connection`` if given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The newest revision shipped with this version of batch-sender."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade to ``revision`` in the caller's transaction, one process at a time per database."""
    _lock(connection)
    try:
        command.upgrade(config(connection), revision)
    finally:
        _unlock(connection)


def downgrade(connection: Connection, revision: str = "base") -> None:
    """Downgrade to ``revision`` (``base`` drops everything): for tests and operators."""
    _lock(connection)
    try:
        command.downgrade(config(connection), revision)
    finally:
        _unlock(connection)


def _lock(connection: Connection) -> None:
    """Serialise concurrent migrations (SQLite is serialised by its BEGIN IMMEDIATE already)."""
    name = connection.dialect.name
    if name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif name in ("mysql", "mariadb"):
        # a session-level lock: _unlock releases it (a pool reset would not)
        connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": _LOCK_NAME, "timeout": _MYSQL_LOCK_TIMEOUT_S},
        )


def _unlock(connection: Connection) -> None:
    """Release the MariaDB/MySQL named lock of ``_lock`` (other locks end with the transaction)."""
    if connection.dialect.name in ("mysql", "mariadb"):
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK_NAME})
