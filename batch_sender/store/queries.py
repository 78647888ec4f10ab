"""The results store: campaigns, staging, and the recipient queue, in SQLAlchemy Core.

The database *is* the queue (DESIGN.md §2, §7): recipients are staged ``pending`` before anything
is sent, claimed in committed transactions (``pending → sending``) by any number of workers, and
written back once. PostgreSQL and MariaDB claim with ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite
serialises writers with ``BEGIN IMMEDIATE``. Workers on several machines also share, through it,
a lease on their claims (``touch_claims``), one send schedule per account (``reserve_rate``) and
a lock so that one of them at a time settles the others' orphans (``exclusive``). Every
SQLAlchemy error leaves as ``StoreError``.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple

from alembic.util.exc import CommandError
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    case,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Update

from batch_sender import sms
from batch_sender.errors import StoreError
from batch_sender.states import STAGED_ONLY, Status
from batch_sender.store import engine as engines
from batch_sender.store import migrate
from batch_sender.store.records import (
    Campaign,
    Census,
    Chunk,
    ChunkRecipient,
    InFlight,
    Outcome,
    PackedRecipients,
    SentOutcomes,
    StagedRow,
    StagedTuple,
    staged_tuple,
)
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    CAMPAIGN_STATUSES,
    CLIENT_MESSAGE_ID_LENGTH,
    ERROR_CODE_LENGTH,
    ERROR_DESCRIPTION_LENGTH,
    MSISDN_LENGTH,
    UTCDateTime,
    campaigns,
    messages,
    rate_limits,
    recipients,
    results_view,
)

__all__ = ["Store"]

log = logging.getLogger(__name__)

DEFAULT_STAGE_BATCH = 5000  # rows per executemany while staging
MESSAGE_CACHE_SIZE = 100_000  # digest → messages.id entries kept while staging one campaign
RESULTS_FETCH = 2000  # rows fetched per round trip when streaming the results view
_ID_BATCH = 1000  # ids per "WHERE id IN (…)"
CLAIM_DEADLOCK_RETRIES = 3  # a claim that lost a deadlock is rolled back whole and run again
_ENDED = frozenset({"finished", "stopped", "interrupted"})
_SETTLEABLE = (Status.SENDING.value, Status.UNKNOWN.value)
#: UPDATE … FROM (3.33) and the ->> operator (3.38); older SQLite uses executemany
_SQLITE_JSON_UPDATE = (3, 38, 0)
_SERVER_ENGINES = frozenset({"postgresql", "mysql", "mariadb"})
#: The database's own clock in seconds since the epoch (one clock for every worker's machine).
_DB_EPOCH = {
    "postgresql": "SELECT extract(epoch from clock_timestamp())",
    "mysql": "SELECT UNIX_TIMESTAMP(SYSDATE(6))",
    "mariadb": "SELECT UNIX_TIMESTAMP(SYSDATE(6))",
    "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0",
}
_LOCK_NAME_LENGTH = 64  # MariaDB/MySQL's limit on GET_LOCK names

_r = recipients.c


def _now() -> datetime:
    """The current time as naive UTC, the form stored (see ``tables.UTCDateTime``)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _clip(value: str | None, length: int) -> str | None:
    """``value`` cut to a column's width, so an over-long reason never fails a whole batch."""
    return None if value is None else value[:length]


#: Column order of the tuples handed to a bulk writer.
_STAGE_COLUMNS = (
    "campaign_id",
    "row_no",
    "msisdn",
    "status",
    "message_id",
    "parts",
    "attempts",
    "error_code",
    "error_description",
    "updated_at",
    "fields",
)


class _BulkWriter(NamedTuple):
    """How to insert many recipients rows on one connection (see :func:`_bulk_writer`)."""

    write: Callable[[list[tuple[Any, ...]]], None]
    updated_at: Any  # the one value needing conversion, converted once
    no_error: str | None  # what to pass for an error_code or error_description that is NULL


def _bulk_writer(conn: Connection, updated_at: datetime) -> _BulkWriter:
    """The fastest way this connection's driver has to insert many recipients rows.

    PostgreSQL (psycopg): ``COPY … FROM STDIN``. Positional drivers (sqlite3, PyMySQL, which
    rewrites executemany into multi-row INSERTs): the Core INSERT compiled once and run as a driver
    executemany of tuples, skipping SQLAlchemy's per-row parameter processing. Anything else: Core
    executemany.

    On SQLite the error columns (NULL on every accepted row) are passed as ``''`` and made NULL
    by the statement: the ``sqlite3`` module looks up an adapter for each ``None`` it binds,
    which was 0.4 of its 1.5 µs per row.
    """
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        copy_sql = f"COPY recipients ({', '.join(_STAGE_COLUMNS)}) FROM STDIN"

        def copy(rows: list[tuple[Any, ...]]) -> None:
            raw: Any = conn.connection.dbapi_connection
            with raw.cursor() as cursor, cursor.copy(copy_sql) as out:
                for row in rows:
                    out.write_row(row)

        return _BulkWriter(copy, updated_at, None)
    compiled = insert(recipients).compile(dialect=dialect, column_keys=list(_STAGE_COLUMNS))
    if compiled.positiontup is not None and tuple(compiled.positiontup) == _STAGE_COLUMNS:
        to_db = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        sql, no_error = compiled.string, None
        if dialect.name == "sqlite":
            marks = ["?"] * len(_STAGE_COLUMNS)
            for column in ("error_code", "error_description"):
                marks[_STAGE_COLUMNS.index(column)] = "NULLIF(?, '')"
            columns = ", ".join(_STAGE_COLUMNS)
            sql = f"INSERT INTO recipients ({columns}) VALUES ({', '.join(marks)})"
            no_error = ""

        def positional(rows: list[tuple[Any, ...]]) -> None:
            conn.exec_driver_sql(sql, rows)

        return _BulkWriter(positional, updated_at if to_db is None else to_db(updated_at), no_error)

    def core(rows: list[tuple[Any, ...]]) -> None:
        conn.execute(
            insert(recipients), [dict(zip(_STAGE_COLUMNS, row, strict=True)) for row in rows]
        )

    return _BulkWriter(core, updated_at, None)


def _update_by_case(outcomes: Sequence[Outcome], now: datetime) -> Update:
    """One UPDATE writing every outcome of ``outcomes`` (the same rule as ``Store.record``)."""
    ids = [o.recipient_id for o in outcomes]

    def per_row(values: list[str | None]) -> Any:
        return case(dict(zip(ids, values, strict=True)), value=_r.id)

    return (
        update(recipients)
        .where(_r.id.in_(ids), _r.status.in_(_SETTLEABLE))
        .values(
            status=per_row([o.status.value for o in outcomes]),
            api_message_id=per_row(
                [_clip(o.api_message_id, API_MESSAGE_ID_LENGTH) for o in outcomes]
            ),
            error_code=per_row([_clip(o.error_code, ERROR_CODE_LENGTH) for o in outcomes]),
            error_description=per_row(
                [_clip(o.error_description, ERROR_DESCRIPTION_LENGTH) for o in outcomes]
            ),
            updated_at=literal(now, UTCDateTime()),
        )
    )


def _checked(client_message_id: str) -> str:
    if len(client_message_id) > CLIENT_MESSAGE_ID_LENGTH:
        raise ValueError(f"client_message_id longer than {CLIENT_MESSAGE_ID_LENGTH}")
    return client_message_id


def _packed_messages(query: Select[Any], count: int) -> Select[Any]:
    """``(message_id, "id,id,…", "msisdn,msisdn,…")`` per message among the rows of ``query``
    (id, msisdn, message_id), in message order: the first ``count`` messages, as each gives at
    least one chunk and a claim takes at most ``count``. (Splitting and joining plain texts
    costs the coordinator a fraction of what JSON did.)"""
    found = query.subquery()
    return (
        select(
            found.c.message_id,
            func.group_concat(found.c.id, ","),
            func.group_concat(found.c.msisdn, ","),
        )
        .group_by(found.c.message_id)
        .order_by(found.c.message_id)
        .limit(count)
    )


def _batched(rows: Iterable[StagedRow | StagedTuple], size: int) -> Iterator[list[StagedTuple]]:
    """``rows`` in lists of ``size``, as tuples (itertools.batched arrives in Python 3.12)."""
    iterator = iter(rows)
    while batch := list(itertools.islice(iterator, size)):
        yield [staged_tuple(row) if isinstance(row, StagedRow) else row for row in batch]


class _ClaimSql:
    """The queue's hot statements as driver SQL, built once per dialect.

    Claiming and recording run once per request; going through the driver directly (with the
    one timestamp converted once) costs a fraction of building Core constructs every time.
    """

    _cache: dict[str, _ClaimSql] = {}

    def __init__(self, dialect: Dialect) -> None:
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._to_db = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        self._claims: dict[int, str] = {}
        m = self.mark
        self.record = (
            f"UPDATE recipients SET status = {m}, api_message_id = {m}, error_code = {m}, "
            f"error_description = {m}, updated_at = {m} "
            f"WHERE id = {m} AND status IN ('sending', 'unknown')"
        )

        # SQLite: claim and record in one statement each, the rows passed as one JSON text
        # (json_each). Each statement is one GIL hand-off, where an executemany or a fetch
        # hands the GIL over once per row and then waits for the sending threads to give it
        # back: that wait, not SQLite, was most of the coordinator's time.
        self.record_json: str | None = None
        self.record_sent_json: str | None = None
        self.claim_packed: str | None = None
        self.select_packed = (  # _packed_messages of the pending rows (campaign_id, rows, messages)
            "SELECT message_id, group_concat(id, ','), group_concat(msisdn, ',') FROM ("
            "SELECT id, msisdn, message_id FROM recipients "
            "WHERE campaign_id = ? AND status = 'pending' ORDER BY message_id, id LIMIT ?"
            ") GROUP BY message_id ORDER BY message_id LIMIT ?"
        )
        if dialect.name == "sqlite" and sqlite3.sqlite_version_info >= _SQLITE_JSON_UPDATE:
            # (client_message_id, worker, claimed_at, updated_at, JSON [id, ...])
            self.claim_packed = (
                "UPDATE recipients SET status = 'sending', client_message_id = ?, "
                "claimed_by = ?, claimed_at = ?, attempts = attempts + 1, updated_at = ? "
                "WHERE id IN (SELECT value FROM json_each(?))"
            )
            # (updated_at, JSON {"id": api_message_id, ...}): the sent rows, nearly all of
            # them, with one value each to pull out of the JSON (3.0 -> 1.9 µs a row)
            self.record_sent_json = (
                "UPDATE recipients SET status = 'sent', api_message_id = j.value, "
                "error_code = NULL, error_description = NULL, updated_at = ? "
                "FROM json_each(?) AS j WHERE recipients.id = j.key "
                "AND recipients.status IN ('sending', 'unknown')"
            )
            # (updated_at, JSON [[id, status, api_message_id, code, description], ...])
            self.record_json = (
                "UPDATE recipients SET status = j.value ->> 1, api_message_id = j.value ->> 2, "
                "error_code = j.value ->> 3, error_description = j.value ->> 4, updated_at = ? "
                "FROM json_each(?) AS j WHERE recipients.id = j.value ->> 0 "
                "AND recipients.status IN ('sending', 'unknown')"
            )

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _ClaimSql:
        key = f"{dialect.name}+{dialect.driver}"
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(dialect)
        return found

    def timestamp(self, value: datetime) -> Any:
        return value if self._to_db is None else self._to_db(value)

    def claim(self, n: int) -> str:
        """UPDATE claiming ``n`` ids: (client_message_id, worker, claimed_at, updated_at, *ids)."""
        sql = self._claims.get(n)
        if sql is None:
            m = self.mark
            sql = self._claims[n] = (
                f"UPDATE recipients SET status = 'sending', client_message_id = {m}, "
                f"claimed_by = {m}, claimed_at = {m}, attempts = attempts + 1, "
                f"updated_at = {m} WHERE id IN ({', '.join([m] * n)})"
            )
        return sql


class _NameTaken(Exception):
    """Another process committed a campaign of this name while we were staging it."""


@dataclass(frozen=True, slots=True)
class _Message:
    wire_text: str
    unicode: bool
    parts: int


class Store:
    """The results database: open it with ``Store.open(url)``, close it (or use ``with``)."""

    def __init__(self, engine: Engine, url: str) -> None:
        """Wrap an engine made by ``engine.create``; prefer ``Store.open``."""
        self._engine = engine
        self._url = url
        self._messages: dict[int, _Message] = {}  # immutable rows, cached for claims
        #: called before each claim with the campaign id: an extra condition on the rows it may
        #: take, or None (operators' controls: send windows, --not-after; windows.ClaimGate)
        self.before_claim: Callable[[int], ColumnElement[bool] | None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Store:
        """Connect to ``url`` and bring its schema to head (or insist it is, if not ``upgrade``)."""
        with engines.store_errors("opening the results database", url):
            try:
                engine = engines.create(url)
            except ImportError as exc:
                raise StoreError(
                    f"no database driver for {engines.masked(url)}: {exc}; "
                    "install batch-sender[postgres] or batch-sender[mysql]"
                ) from exc
            store = cls(engine, url)
            try:
                if upgrade:
                    store.upgrade()
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
        if at != migrate.head():
            raise StoreError(
                f"the results database {engines.masked(self._url)} is at revision "
                f"{at or 'none (empty)'}, this batch-sender needs {migrate.head()}: "
                "run `batch-sender db upgrade`"
            )

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
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

    # -- campaigns ---------------------------------------------------------------------------

    def campaign(self, name: str) -> Campaign | None:
        """The campaign called ``name``, or None."""
        with engines.store_errors("reading a campaign", self._url), self._engine.connect() as conn:
            return self._campaign_where(conn, campaigns.c.name == name)

    def campaigns(self) -> list[Campaign]:
        """Every campaign, oldest first."""
        with engines.store_errors("listing campaigns", self._url), self._engine.connect() as conn:
            rows = conn.execute(select(campaigns).order_by(campaigns.c.id))
            return [_campaign(row) for row in rows]

    def stage_campaign(
        self,
        *,
        name: str,
        source: str,
        fingerprint: str,
        options: dict[str, object],
        rows: Iterable[StagedRow | StagedTuple],
        batch_size: int = DEFAULT_STAGE_BATCH,
    ) -> tuple[Campaign, bool]:
        """Write a new campaign and all its rows in one transaction; (campaign, created?).

        ``rows`` may be :class:`StagedRow` objects or, on the hot path, plain tuples of the same
        fields (:data:`StagedTuple`).

        If ``name`` exists already nothing is staged and the existing campaign is returned with
        False: the caller compares fingerprints. Any exception, including one raised by ``rows``,
        rolls everything back. Later rows repeating an accepted number become ``duplicate``.
        """
        existing = self.campaign(name)
        if existing is not None:
            return existing, False
        try:
            with (
                engines.store_errors(f"staging campaign {name!r}", self._url),
                # every row refers to this transaction's own campaign and messages rows: the
                # per-row foreign key lookups are 1 µs of SQLite's 7 per staged row
                engines.begin_write(self._engine, bulk=True) as conn,
            ):
                # re-check under the write lock (SQLite serialises here; others race on the
                # unique name below, the loser waiting for the winner's commit)
                existing = self._campaign_where(conn, campaigns.c.name == name)
                if existing is not None:
                    return existing, False
                campaign_id = self._insert_campaign(conn, name, source, fingerprint, options)
                total = self._stage_rows(conn, campaign_id, rows, batch_size)
                self._mark_duplicates(conn, campaign_id)
                conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id)
                    .values(status="ready", total=total)
                )
        except _NameTaken:
            winner = self.campaign(name)
            if winner is None:  # the other stager rolled back after all
                raise StoreError(f"campaign {name!r} is being staged by another process") from None
            return winner, False
        staged = self.campaign(name)
        assert staged is not None
        log.info("staged campaign %r: %d rows", name, staged.total)
        return staged, True

    def set_status(self, campaign_id: int, status: str) -> None:
        """Move a campaign to ``status``, stamping started_at (first run) and finished_at."""
        if status not in CAMPAIGN_STATUSES:
            raise ValueError(f"unknown campaign status {status!r}")
        now = literal(_now(), UTCDateTime())
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = func.coalesce(campaigns.c.started_at, now)
            values["finished_at"] = None
        elif status in _ENDED:
            values["finished_at"] = now
        with (
            engines.store_errors("updating a campaign", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            done = conn.execute(
                update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
            )
        if done.rowcount == 0:
            raise StoreError(f"no campaign with id {campaign_id}")

    # -- the queue ---------------------------------------------------------------------------

    def claim_chunk(
        self, campaign_id: int, *, size: int, client_message_id: str, worker: str
    ) -> Chunk | None:
        """Claim up to ``size`` pending recipients sharing one payload, or None if none is left.

        The claim is committed before this returns: the rows are ``sending``, stamped with
        ``client_message_id`` and ``worker``, and no other claimer can get them.
        """
        ids = iter((client_message_id,))
        chunks = self.claim_chunks(
            campaign_id, size=size, count=1, worker=worker, new_id=lambda: next(ids)
        )
        return chunks[0] if chunks else None

    def claim_chunks(
        self,
        campaign_id: int,
        *,
        size: int,
        count: int,
        worker: str,
        new_id: Callable[[], str],
    ) -> list[Chunk]:
        """Claim up to ``count`` chunks of up to ``size`` recipients each, in one transaction.

        Each chunk shares one payload and gets its own client message ID from ``new_id``. One
        SELECT (``FOR UPDATE SKIP LOCKED`` on PostgreSQL/MariaDB) finds the rows, one UPDATE per
        chunk claims them, one commit makes every claim durable before any request leaves. An
        empty list means nothing is pending (or everything pending is locked by other workers).
        """
        pending: tuple[ColumnElement[bool], ...] = (
            _r.campaign_id == campaign_id,
            # a literal, not a parameter: SQLite uses its partial index of pending rows only
            # when the statement itself says status = 'pending' (revision 0006)
            _r.status == literal(Status.PENDING.value, literal_execute=True),
        )
        extra = None if self.before_claim is None else self.before_claim(campaign_id)
        if extra is not None:
            pending = (*pending, extra)
        for attempt in itertools.count(1):
            try:
                return self._claim_once(
                    campaign_id, pending, size, count, worker, new_id, plain=extra is None
                )
            except StoreError as exc:
                if attempt > CLAIM_DEADLOCK_RETRIES or not _deadlocked(exc.__cause__):
                    raise
                log.info("a claim deadlocked with another worker's; claiming again")
        raise AssertionError("unreachable")  # pragma: no cover

    def _claim_once(
        self,
        campaign_id: int,
        pending: tuple[ColumnElement[bool], ...],
        size: int,
        count: int,
        worker: str,
        new_id: Callable[[], str],
        *,
        plain: bool,
    ) -> list[Chunk]:
        """One claiming transaction (see :meth:`claim_chunks`); ``plain``: ``pending`` holds
        only the campaign and the status (no send-window condition)."""
        claimed: list[tuple[str, int, Sequence[ChunkRecipient]]] = []
        with (
            engines.store_errors("claiming recipients", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            sql = _ClaimSql.for_dialect(conn.dialect)

            def query() -> Select[Any]:  # (built only where it is run: not every claim)
                return (
                    select(_r.id, _r.msisdn, _r.message_id)
                    .where(*pending)
                    .order_by(_r.message_id, _r.id)
                    .limit(size * count)
                )

            now = sql.timestamp(_now())
            worker = worker[:64]
            if sql.claim_packed is not None:
                # SQLite: one row per message, its ids and numbers packed as texts by the query
                # (not one fetch per row, each a GIL hand-off); each chunk's slices go to the
                # UPDATE and to the courier as texts, made into recipients only where it is sent
                if plain:  # the statement as text: building and caching Core's cost 5%
                    packed = conn.exec_driver_sql(
                        sql.select_packed, (campaign_id, size * count, count)
                    ).all()
                else:
                    packed = conn.execute(_packed_messages(query(), count)).all()
                for message_id, id_text, number_text in packed:
                    ids, numbers = id_text.split(","), number_text.split(",")
                    for start in range(0, len(ids), size):
                        if len(claimed) == count:
                            break
                        part = ",".join(ids[start : start + size])
                        client_message_id = _checked(new_id())
                        conn.exec_driver_sql(
                            sql.claim_packed, (client_message_id, worker, now, now, f"[{part}]")
                        )
                        recipients = PackedRecipients(part, ",".join(numbers[start : start + size]))
                        claimed.append((client_message_id, message_id, recipients))
            else:
                rows = conn.execute(query().with_for_update(skip_locked=True)).all()
                for message_id, group in itertools.groupby(rows, key=lambda row: row[2]):
                    members = [ChunkRecipient(row[0], row[1]) for row in group]
                    for start in range(0, len(members), size):
                        if len(claimed) < count:
                            client_message_id = _checked(new_id())
                            claimed.append(
                                (
                                    client_message_id,
                                    message_id,
                                    tuple(members[start : start + size]),
                                )
                            )
                for client_message_id, _, chunk_members in claimed:
                    conn.exec_driver_sql(
                        sql.claim(len(chunk_members)),
                        (client_message_id, worker, now, now, *(r.id for r in chunk_members)),
                    )
            if not claimed:
                return []
            payloads = {mid: self._message(conn, mid) for mid in {m for _, m, _ in claimed}}
        return [
            Chunk(
                campaign_id=campaign_id,
                client_message_id=client_message_id,
                message_id=message_id,
                wire_text=payloads[message_id].wire_text,
                unicode=payloads[message_id].unicode,
                parts=payloads[message_id].parts,
                recipients=members,
            )
            for client_message_id, message_id, members in claimed
        ]

    def record(self, outcomes: Sequence[Outcome], *, accepted: Sequence[SentOutcomes] = ()) -> None:
        """Write outcomes in one transaction; only rows still ``sending`` or ``unknown`` change.

        ``accepted``: more outcomes, as whole chunks every recipient of which was accepted.
        """
        if not outcomes and not accepted:
            return
        now = _now()
        with (
            engines.store_errors("recording outcomes", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            _asynchronous_commit(conn)
            sql = _ClaimSql.for_dialect(conn.dialect)
            if accepted and sql.record_sent_json is None:  # only SQLite reads them packed
                outcomes = [*outcomes, *itertools.chain.from_iterable(accepted)]
                accepted = ()
            if conn.dialect.name in ("mysql", "mariadb"):
                # PyMySQL runs an UPDATE executemany as one round trip per row: send one
                # UPDATE … SET col = CASE id WHEN … END per slice instead
                for start in range(0, len(outcomes), _ID_BATCH):
                    conn.execute(_update_by_case(outcomes[start : start + _ID_BATCH], now))
                return
            stamp = sql.timestamp(now)
            rest = outcomes
            if sql.record_sent_json is not None:
                sent: dict[int, str | None] = {}
                rest = []
                for o in outcomes:
                    if (
                        o.status is Status.SENT
                        and o.error_code is None
                        and o.error_description is None
                    ):
                        api_id = o.api_message_id
                        sent[o.recipient_id] = api_id and api_id[:API_MESSAGE_ID_LENGTH]
                    else:
                        rest.append(o)
                # one JSON object of every accepted row: the packed chunks' texts joined
                objects = [p.packed[1:-1] for p in accepted if p.length]
                if sent:
                    objects.append(json.dumps(sent)[1:-1])
                if objects:
                    packed = "{" + ",".join(objects) + "}"
                    conn.exec_driver_sql(sql.record_sent_json, (stamp, packed))
                if not rest:
                    return
            # (a Status is a str; slicing only what may be long keeps this loop cheap)
            values = [
                (
                    o.recipient_id,
                    o.status,
                    o.api_message_id and o.api_message_id[:API_MESSAGE_ID_LENGTH],
                    o.error_code and o.error_code[:ERROR_CODE_LENGTH],
                    o.error_description and o.error_description[:ERROR_DESCRIPTION_LENGTH],
                )
                for o in rest
            ]
            if sql.record_json is not None:
                conn.exec_driver_sql(sql.record_json, (stamp, json.dumps(values)))
            else:
                conn.exec_driver_sql(sql.record, [(*v[1:], stamp, v[0]) for v in values])

    def release(
        self, recipient_ids: Sequence[int], *, from_statuses: Sequence[Status] = (Status.SENDING,)
    ) -> None:
        """Give rows that were never accepted back to the queue (``sending → pending``).

        ``from_statuses`` widens it to ``unknown`` rows the gateway said it never saw.
        """
        if not recipient_ids:
            return
        with (
            engines.store_errors("releasing recipients", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            for start in range(0, len(recipient_ids), _ID_BATCH):
                conn.execute(
                    update(recipients)
                    .where(
                        _r.id.in_(list(recipient_ids[start : start + _ID_BATCH])),
                        _r.status.in_([s.value for s in from_statuses]),
                    )
                    .values(
                        status=Status.PENDING.value,
                        client_message_id=None,
                        claimed_by=None,
                        claimed_at=None,
                        # the claim counted an attempt that never left
                        attempts=case((_r.attempts > 0, _r.attempts - 1), else_=0),
                        updated_at=_now(),
                    )
                )

    def in_flight(
        self,
        campaign_id: int,
        *,
        statuses: Sequence[Status] = (Status.SENDING,),
        older_than: datetime | None = None,
    ) -> list[InFlight]:
        """Rows in ``statuses`` (claimed before ``older_than``), one group per request."""
        stmt = (
            select(_r.id, _r.msisdn, _r.client_message_id, _r.status, _r.claimed_by, _r.claimed_at)
            .where(_r.campaign_id == campaign_id, _r.status.in_([s.value for s in statuses]))
            .order_by(_r.client_message_id, _r.status, _r.id)
        )
        if older_than is not None:
            stmt = stmt.where(_r.claimed_at < literal(older_than, UTCDateTime()))
        with engines.store_errors("reading in-flight rows", self._url), self._engine.connect() as c:
            rows = c.execute(stmt).all()
        groups = []
        for (key, status), group in itertools.groupby(
            rows, key=lambda row: (row.client_message_id, row.status)
        ):
            members = list(group)
            groups.append(
                InFlight(
                    client_message_id=key or "",
                    status=Status(status),
                    claimed_by=members[0].claimed_by,
                    claimed_at=members[0].claimed_at,
                    recipients=tuple(ChunkRecipient(row.id, row.msisdn) for row in members),
                )
            )
        return groups

    def request_size(self, campaign_id: int, client_message_id: str) -> int:
        """How many rows the request ``client_message_id`` carried (settled or not)."""
        stmt = select(func.count()).where(
            _r.campaign_id == campaign_id, _r.client_message_id == client_message_id
        )
        with engines.store_errors("reading a request", self._url), self._engine.connect() as c:
            return int(c.execute(stmt).scalar_one())

    def touch_claims(self, campaign_id: int, worker: str) -> int:
        """Renew the lease on ``worker``'s ``sending`` rows (``claimed_at`` = now); how many.

        Rows another transaction holds (being recorded right now) are skipped rather than waited
        for, so a heartbeat never deadlocks with its own worker's writes.
        """
        mine = (
            _r.campaign_id == campaign_id,
            _r.status == Status.SENDING.value,
            _r.claimed_by == worker[:64],
        )
        touched = 0
        with (
            engines.store_errors("renewing claims", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            _asynchronous_commit(conn)  # a lost heartbeat only shortens a lease
            ids = (
                conn.execute(select(_r.id).where(*mine).with_for_update(skip_locked=True))
                .scalars()
                .all()
            )
            now = _now()
            for start in range(0, len(ids), _ID_BATCH):
                done = conn.execute(
                    update(recipients)
                    .where(_r.id.in_(ids[start : start + _ID_BATCH]), *mine)
                    .values(claimed_at=now)
                )
                touched += done.rowcount
        return touched

    def reserve_rate(self, account: str, units: float, *, rate: float) -> float:
        """Reserve ``units`` of ``account``'s shared schedule; seconds until they may start.

        The schedule is one row (``rate_limits``) locked for the reservation: the slots start at
        the later of "now" and the end of every earlier reservation, on the database's clock, so
        workers on machines with different clocks still share one timeline. The caller sends its
        units evenly over ``[delay, delay + units / rate)`` from the moment this returns.
        """
        if rate <= 0 or units <= 0:
            raise ValueError("rate and units must be positive")
        account = account[:200]
        with engines.store_errors("reserving send slots", self._url):
            self._ensure_rate_row(account, rate)
            with engines.begin_write(self._engine) as conn:
                next_at = conn.execute(
                    select(rate_limits.c.next_at)
                    .where(rate_limits.c.account == account)
                    .with_for_update()
                ).scalar_one()
                now = float(conn.exec_driver_sql(_DB_EPOCH[conn.dialect.name]).scalar_one())
                start = max(now, float(next_at))
                conn.execute(
                    update(rate_limits)
                    .where(rate_limits.c.account == account)
                    .values(next_at=start + units / rate, rate=rate, updated_at=_now())
                )
        return start - now

    def _ensure_rate_row(self, account: str, rate: float) -> None:
        """Create ``account``'s schedule row if it is missing (a concurrent creator wins)."""
        with self._engine.connect() as conn:
            exists = conn.execute(
                select(rate_limits.c.account).where(rate_limits.c.account == account)
            ).first()
        if exists is not None:
            return
        try:
            with engines.begin_write(self._engine) as conn:
                conn.execute(
                    insert(rate_limits).values(
                        account=account, next_at=0.0, rate=rate, updated_at=_now()
                    )
                )
        except IntegrityError:
            pass  # another worker created it first

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Try to take a database-wide lock called ``name`` without waiting; yield whether held.

        For work that one worker at a time should do, such as settling the orphans of a
        campaign: a worker that does not get the lock skips, another is doing it. PostgreSQL uses
        an advisory lock, MariaDB/MySQL ``GET_LOCK`` (both per schema/database and released if
        the process dies); SQLite, one machine's store, always yields True.
        """
        dialect = self._engine.dialect.name
        if dialect not in _SERVER_ENGINES:
            yield True
            return
        if dialect == "postgresql":
            key = "hashtext(current_schema() || '.' || :name)"
            take, give = f"SELECT pg_try_advisory_lock({key})", f"SELECT pg_advisory_unlock({key})"
        else:
            key = f"LEFT(CONCAT(COALESCE(DATABASE(), ''), '.', :name), {_LOCK_NAME_LENGTH})"
            take, give = f"SELECT GET_LOCK({key}, 0)", f"SELECT RELEASE_LOCK({key})"
        with engines.store_errors(f"taking lock {name!r}", self._url):
            conn = self._engine.connect()
        try:
            with engines.store_errors(f"taking lock {name!r}", self._url):
                held = bool(conn.execute(text(take), {"name": name}).scalar())
                conn.commit()  # a session lock: it outlives the transaction, which must not idle
            try:
                yield held
            finally:
                if held:
                    with engines.store_errors(f"releasing lock {name!r}", self._url):
                        conn.execute(text(give), {"name": name})
                        conn.commit()
        except BaseException:
            conn.invalidate()  # never hand a connection that may hold the lock back to the pool
            raise
        finally:
            conn.close()

    def requeue_unknown(self, campaign_id: int) -> int:
        """Put ``unknown`` rows back to ``pending`` (``--resend-unknown``); how many moved."""
        with (
            engines.store_errors("requeueing unknown rows", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            done = conn.execute(
                update(recipients)
                .where(_r.campaign_id == campaign_id, _r.status == Status.UNKNOWN.value)
                .values(
                    status=Status.PENDING.value,
                    client_message_id=None,
                    claimed_by=None,
                    claimed_at=None,
                    updated_at=_now(),
                )
            )
        return done.rowcount

    # -- reading -----------------------------------------------------------------------------

    def counts(self, campaign_id: int) -> dict[Status, int]:
        """Recipients per state (every state present, zeros included)."""
        stmt = (
            select(_r.status, func.count()).where(_r.campaign_id == campaign_id).group_by(_r.status)
        )
        with engines.store_errors("counting recipients", self._url), self._engine.connect() as c:
            found = {Status(status): int(n) for status, n in c.execute(stmt)}
        return {status: found.get(status, 0) for status in Status}

    def census(self, campaign_id: int) -> Census:
        """:meth:`counts`, and the message parts (credits) of every recipient accepted for
        sending, sent or not, in one pass over the campaign."""
        stmt = (
            select(_r.status, func.count(), func.coalesce(func.sum(_r.parts), 0))
            .where(_r.campaign_id == campaign_id)
            .group_by(_r.status)
        )
        with engines.store_errors("counting recipients", self._url), self._engine.connect() as c:
            found = {Status(status): (int(n), int(parts)) for status, n, parts in c.execute(stmt)}
        return Census(
            counts={status: found.get(status, (0, 0))[0] for status in Status},
            parts=sum(parts for status, (_, parts) in found.items() if status not in STAGED_ONLY),
            part_counts={
                status: parts
                for status, (_, parts) in found.items()
                if parts and status not in STAGED_ONLY
            },
        )

    def error_counts(self, campaign_id: int) -> list[tuple[Status, str | None, str | None, int]]:
        """(state, code, description, recipients) of failed and rejected rows, most common
        first: ``rejected`` rows were refused at staging, ``failed`` ones by the gateway."""
        count = func.count().label("n")
        stmt = (
            select(_r.status, _r.error_code, _r.error_description, count)
            .where(
                _r.campaign_id == campaign_id,
                _r.status.in_([Status.FAILED.value, Status.REJECTED.value]),
            )
            .group_by(_r.status, _r.error_code, _r.error_description)
            .order_by(count.desc(), _r.error_code)
        )
        with engines.store_errors("counting errors", self._url), self._engine.connect() as c:
            return [
                (Status(status), code, description, int(n))
                for status, code, description, n in c.execute(stmt)
            ]

    def results(self, campaign_id: int) -> Iterator[dict[str, object]]:
        """The ``results`` view for one campaign in source order, streamed (flat memory)."""
        view = results_view.c
        stmt = select(results_view).where(view.campaign_id == campaign_id).order_by(view.row_no)
        with engines.store_errors("reading results", self._url), self._engine.connect() as conn:
            result = conn.execution_options(yield_per=RESULTS_FETCH).execute(stmt)
            try:
                for row in result.mappings():
                    yield dict(row)
            finally:  # a reader that stops early must not leave an unread server-side cursor
                result.close()

    # -- helpers -----------------------------------------------------------------------------

    def _campaign_where(self, conn: Connection, condition: Any) -> Campaign | None:
        row = conn.execute(select(campaigns).where(condition)).first()
        return None if row is None else _campaign(row)

    def _insert_campaign(
        self,
        conn: Connection,
        name: str,
        source: str,
        fingerprint: str,
        options: dict[str, object],
    ) -> int:
        """Insert the campaign row (``staging``); a concurrent winner raises ``_NameTaken``."""
        try:
            result = conn.execute(
                insert(campaigns).values(
                    name=name,
                    source=source,
                    fingerprint=fingerprint,
                    options=json.dumps(options, sort_keys=True, default=str),
                    status="staging",
                    total=0,
                    created_at=_now(),
                )
            )
        except IntegrityError as exc:
            raise _NameTaken(name) from exc
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def _stage_rows(
        self,
        conn: Connection,
        campaign_id: int,
        rows: Iterable[StagedRow | StagedTuple],
        batch_size: int,
    ) -> int:
        """Insert ``rows`` in batches, creating each distinct payload once; the row count."""
        digests: dict[str, int] = {}  # digest → messages.id, bounded
        evicted = False
        total = 0
        write, updated_at, no_error = _bulk_writer(conn, _now())
        for batch in _batched(rows, batch_size):
            if len(digests) > MESSAGE_CACHE_SIZE:
                digests.clear()
                evicted = True
            self._ensure_messages(conn, campaign_id, batch, digests, evicted)
            message_id = digests.get
            write(
                [
                    (
                        campaign_id,
                        row_no,
                        msisdn[:MSISDN_LENGTH],
                        status,
                        None if digest is None else message_id(digest),
                        parts,
                        0,
                        # _clip, inlined: this runs a million times
                        no_error if code is None else code[:ERROR_CODE_LENGTH],
                        no_error if reason is None else reason[:ERROR_DESCRIPTION_LENGTH],
                        updated_at,
                        fields,
                    )
                    for row_no, msisdn, status, parts, digest, _, _, code, reason, fields in batch
                ]
            )
            total += len(batch)
        return total

    def _ensure_messages(
        self,
        conn: Connection,
        campaign_id: int,
        batch: Sequence[StagedTuple],
        digests: dict[str, int],
        evicted: bool,
    ) -> None:
        """Make sure every payload of ``batch`` has a messages row and its id is in ``digests``."""
        new: dict[str, StagedTuple] = {}
        for row in batch:
            digest, wire_text = row[4], row[5]
            if digest is None or wire_text is None:
                if row[2] == Status.PENDING:
                    raise ValueError(f"row {row[0]}: a pending row needs a digest and wire_text")
            elif digest not in digests:
                new.setdefault(digest, row)
        if not new:
            return
        if evicted:  # some of these may have been created before the cache was cleared
            digests.update(self._message_ids(conn, campaign_id, list(new)))
            new = {d: row for d, row in new.items() if d not in digests}
            if not new:
                return
        conn.execute(
            insert(messages),
            [
                {
                    "campaign_id": campaign_id,
                    "digest": digest,
                    "wire_text": wire_text,
                    "unicode": unicode,
                    "parts": parts,
                    "text": sms.readable(wire_text or "", unicode),
                }
                for digest, (_, _, _, parts, _, wire_text, unicode, _, _, _) in new.items()
            ],
        )
        digests.update(self._message_ids(conn, campaign_id, list(new)))

    @staticmethod
    def _message_ids(conn: Connection, campaign_id: int, wanted: list[str]) -> dict[str, int]:
        rows = conn.execute(
            select(messages.c.digest, messages.c.id).where(
                messages.c.campaign_id == campaign_id, messages.c.digest.in_(wanted)
            )
        )
        return {digest: int(message_id) for digest, message_id in rows}

    @staticmethod
    def _mark_duplicates(conn: Connection, campaign_id: int) -> None:
        """Accepted rows repeating an earlier accepted row's number become ``duplicate``.

        First the numbers that occur more than once at all: a GROUP BY that the
        (campaign_id, msisdn) index answers in order, without sorting a million rows (a window
        function over the campaign spent ~6 µs a row doing that). Then, for those few numbers
        only, every accepted row after the first. Plain single-table statements: right after a
        bulk insert PostgreSQL's statistics know nothing of the new rows, and a self-join would
        be planned as a per-row loop.
        """
        repeated = (
            conn.execute(
                select(_r.msisdn)
                .where(_r.campaign_id == campaign_id)
                .group_by(_r.msisdn)
                .having(func.count() > 1)
            )
            .scalars()
            .all()
        )
        later: list[int] = []
        for start in range(0, len(repeated), _ID_BATCH):
            rows = conn.execute(
                select(_r.id, _r.msisdn)
                .where(
                    _r.campaign_id == campaign_id,
                    _r.status == Status.PENDING.value,
                    _r.msisdn.in_(repeated[start : start + _ID_BATCH]),
                )
                .order_by(_r.msisdn, _r.row_no)
            ).all()
            for _, group in itertools.groupby(rows, key=lambda row: row.msisdn):
                later.extend(row.id for row in itertools.islice(group, 1, None))
        mark = update(recipients).values(status=Status.DUPLICATE.value)
        for start in range(0, len(later), _ID_BATCH):
            conn.execute(mark.where(_r.id.in_(later[start : start + _ID_BATCH])))

    def _message(self, conn: Connection, message_id: int) -> _Message:
        """A messages row, from the cache when possible (rows never change)."""
        cached = self._messages.get(message_id)
        if cached is None:
            row = conn.execute(
                select(messages.c.wire_text, messages.c.unicode, messages.c.parts).where(
                    messages.c.id == message_id
                )
            ).one()
            cached = _Message(row.wire_text, bool(row.unicode), int(row.parts))
            if len(self._messages) >= MESSAGE_CACHE_SIZE:
                self._messages.clear()
            self._messages[message_id] = cached
        return cached


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
    )
