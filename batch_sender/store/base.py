"""The store's lifecycle (open, migrate, close) and what every part of it shares."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from alembic.util.exc import CommandError
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
)

from batch_sender.errors import StoreError
from batch_sender.states import CampaignControl, Status
from batch_sender.store import engine as engines
from batch_sender.store import journal, migrate
from batch_sender.store.records import (
    Campaign,
)
from batch_sender.store.tables import (
    recipients,
)

log = logging.getLogger(__name__)

_r = recipients.c


def _now() -> datetime:
    """The current time as naive UTC, the form stored (see ``tables.UTCDateTime``)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _clip(value: str | None, length: int) -> str | None:
    """``value`` cut to a column's width, so an over-long reason never fails a whole batch."""
    return None if value is None else value[:length]


#: The database's own clock in seconds since the epoch (one clock for every worker's machine).
_DB_EPOCH = {
    "postgresql": "SELECT extract(epoch from clock_timestamp())",
    "mysql": "SELECT UNIX_TIMESTAMP(SYSDATE(6))",
    "mariadb": "SELECT UNIX_TIMESTAMP(SYSDATE(6))",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}

_SERVER_ENGINES = frozenset({"postgresql", "mysql", "mariadb"})

#: PostgreSQL deadlock / serialization failure; MariaDB deadlock / lock wait timeout
_DEADLOCK_SQLSTATES = frozenset({"40P01", "40001"})

_DEADLOCK_MYSQL_CODES = frozenset({1213, 1205})


def _deadlocked(exc: BaseException | None) -> bool:
    """Whether a failed transaction lost a deadlock (InnoDB, PostgreSQL): safe to run again."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _DEADLOCK_SQLSTATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in _DEADLOCK_MYSQL_CODES


def _asynchronous_commit(conn: Connection) -> None:
    """Let this PostgreSQL transaction commit without waiting for its WAL flush.

    For writes whose loss in a database crash is safe (an outcome lost leaves its row
    ``sending``, settled later with ``querymsg``; a lost heartbeat shortens a lease): about half
    of a claim+record cycle's time on PostgreSQL is spent waiting for the flush otherwise. Claims
    stay synchronous: a lost claim could send a row twice. Other engines: nothing to do.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")


def _campaign(row: Row[Any]) -> Campaign:
    return Campaign(
        id=row.id,
        name=row.name,
        source=row.source,
        fingerprint=row.fingerprint,
        options=json.loads(row.options),
        status=row.status,
        total=row.total,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        control=None if row.control is None else CampaignControl(row.control),
        control_at=row.control_at,
    )


_SETTLEABLE = (Status.SENDING.value, Status.UNKNOWN.value)

_ID_BATCH = 1000  # ids per "WHERE id IN (…)"


@dataclass(frozen=True, slots=True)
class _Message:
    wire_text: str
    unicode: bool
    parts: int


#: An extra condition on the rows a claim may take (built by ``store.operators``).
ClaimCondition = ColumnElement[bool]


class StoreBase:
    """The engine and its lifecycle; the other parts of ``Store`` build on it."""

    def __init__(self, engine: Engine, url: str) -> None:
        """Wrap an engine made by ``engine.create``; prefer ``Store.open``."""
        self._engine = engine
        self._url = url
        self._messages: dict[int, _Message] = {}  # immutable rows, cached for claims
        #: campaign id → recipients per message met by its last claim (queue.py, claim_limit.py)
        self._rows_per_message: dict[int, int] = {}
        #: called before each claim with the campaign id: an extra condition on the rows it may
        #: take, or None (operators' controls: send windows, --not-after; windows.ClaimGate)
        self.before_claim: Callable[[int], ClaimCondition | None] | None = None

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Self:
        """Connect to ``url`` and bring its schema to head (or insist it is, if not ``upgrade``).

        With ``upgrade``, journals of outcomes that earlier runs could not record in this
        database are applied first (``store.journal``)."""
        with engines.store_errors("opening the results database", url):
            try:
                engine = engines.create(url)
            except ImportError as exc:
                raise StoreError(
                    f"no database driver for {engines.masked(url)}: {exc}; "
                    f"install it: {engines.driver_hint(url)}"
                ) from exc
            store = cls(engine, url)
            try:
                if upgrade:
                    store.upgrade()
                    # outcomes an earlier run could not record (store.journal), before anything
                    # else reads or settles its rows
                    journal.apply_pending(engine, url)
                else:
                    store._require_head()
            except BaseException:
                engine.dispose()
                raise
            return store

    def upgrade(self) -> None:
        """Apply every pending Alembic revision (creates the tables in an empty database)."""
        with engines.store_errors("upgrading the results database", self._url):
            with engines.begin_write(self._engine) as conn:
                if migrate.current(conn) == migrate.head():
                    return
                try:
                    migrate.upgrade(conn)
                except CommandError as exc:
                    raise StoreError(
                        f"cannot upgrade {engines.masked(self._url)}: {exc} "
                        "(was it migrated by a newer batch-sender?)"
                    ) from exc
            log.info("results database upgraded to %s", migrate.head())

    def _require_head(self) -> None:
        """Refuse to work on a schema this version does not know."""
        with self._engine.connect() as conn:
            at = migrate.current(conn)
        if at is None:
            raise StoreError(
                f"the results database {engines.masked(self._url)} has no batch-sender tables "
                "(nothing has been sent with it yet; `batch-sender db upgrade` creates them)"
            )
        if at != migrate.head():
            raise StoreError(
                f"the results database {engines.masked(self._url)} is at revision "
                f"{at}, this batch-sender needs {migrate.head()}: "
                "run `batch-sender db upgrade`"
            )

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for tests and tools that need to look underneath."""
        return self._engine

    @property
    def shared(self) -> bool:
        """Whether this database can be shared by workers on several machines (not SQLite)."""
        return self._engine.dialect.name in _SERVER_ENGINES
