"""Staging: every recipient of a campaign written once, accepted or not, before anything is sent.

Three bulk paths (PostgreSQL COPY, a driver executemany, SQLAlchemy Core), one column order
(``_STAGE_COLUMNS``); messages are deduplicated by digest; duplicates marked in SQL.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    func,
    insert,
    select,
    update,
)

from batch_sender import sms
from batch_sender.errors import StoreError
from batch_sender.states import CampaignStatus, Status
from batch_sender.store import engine as engines
from batch_sender.store.base import _ID_BATCH, _now, _r
from batch_sender.store.campaigns import CampaignsMixin, _NameTaken
from batch_sender.store.records import STAGED_FIELDS, Campaign, StagedValues
from batch_sender.store.seen import SeenDigests
from batch_sender.store.tables import (
    ERROR_CODE_LENGTH,
    ERROR_DESCRIPTION_LENGTH,
    MSISDN_LENGTH,
    UTCDateTime,
    campaigns,
    messages,
    recipients,
)

log = logging.getLogger(__name__)

DEFAULT_STAGE_BATCH = 5000  # rows per executemany while staging

MESSAGE_CACHE_SIZE = 100_000  # digest → messages.id entries kept while staging one campaign
#: digests per lookup of their messages ids, always exactly this many (the last slice padded
#: with a digest it already has): the driver's statement cache (sqlite3 keeps 128 per
#: connection, for as long as the pooled connection lives) then holds one prepared lookup, not
#: one of ~5,000 parameters for every batch size met, each most of a megabyte (distinct texts:
#: 25 sizes at 300k rows, ~20 MB kept by the run's process for the whole send)
_DIGEST_BATCH = 500

#: Column order of the tuples handed to a bulk writer: the store's packed form of a
#: :class:`StagedRow` (built in :meth:`StagingMixin._stage_rows`, nowhere else): only what varies
#: from row to row. The columns every row of one staging shares (``_SHARED_COLUMNS``) are the
#: writer's: literals in SQLite's statement, not three more values bound per row.
_STAGE_COLUMNS = (
    "row_no",
    "msisdn",
    "status",
    "message_id",
    "parts",
    "error_code",
    "error_description",
    "fields",
)
_SHARED_COLUMNS = ("campaign_id", "attempts", "updated_at")
_MESSAGE_ID = _STAGE_COLUMNS.index("message_id")
_PENDING = Status.PENDING.value
#: The order in which :meth:`StagingMixin._stage_rows` unpacks each :class:`StagedRow`. Reading
#: ten fields by name cost about 1,000 instructions a row (a named tuple's field is a descriptor
#: looked up through its type; CPython 3.11 does not specialise that) against one unpacking;
#: this check keeps the unpacking true to the names should ``StagedRow`` ever change.
_UNPACKED = (
    "row_no",
    "msisdn",
    "status",
    "parts",
    "digest",
    "wire_text",
    "unicode",
    "error_code",
    "error_description",
    "fields",
)
if STAGED_FIELDS != _UNPACKED:  # pragma: no cover - a change to StagedRow not followed here
    raise ImportError(f"StagedRow's fields {STAGED_FIELDS} are not {_UNPACKED}")


class _BulkWriter(NamedTuple):
    """How to insert many recipients rows on one connection (see :func:`_bulk_writer`)."""

    write: Callable[[list[tuple[Any, ...]]], None]
    no_error: str | None  # what to pass for an error_code or error_description that is NULL


def _bulk_writer(conn: Connection, campaign_id: int, updated_at: datetime) -> _BulkWriter:
    """The fastest way this connection's driver has to insert many recipients rows.

    Rows come as ``_STAGE_COLUMNS`` tuples; the writer adds ``_SHARED_COLUMNS`` (this campaign,
    no attempts yet, ``updated_at``). PostgreSQL (psycopg): ``COPY … FROM STDIN``. Positional
    drivers (sqlite3, PyMySQL, which rewrites executemany into multi-row INSERTs): the Core
    INSERT compiled once and run as a driver executemany of tuples, skipping SQLAlchemy's per-row
    parameter processing. Anything else: Core executemany.

    On SQLite the shared columns are literals of the statement, and the error columns (NULL on
    every accepted row) are passed as ``''`` and made NULL by the statement: the ``sqlite3``
    module copies every value it binds (and looks up an adapter for each ``None``, which was 0.4
    of its 1.5 µs per row).
    """
    dialect = conn.dialect
    columns = (*_STAGE_COLUMNS, *_SHARED_COLUMNS)
    to_db = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    shared = (campaign_id, 0, updated_at if to_db is None else to_db(updated_at))
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        copy_sql = f"COPY recipients ({', '.join(columns)}) FROM STDIN"
        copy_shared = (campaign_id, 0, updated_at)  # COPY converts values itself

        def copy(rows: list[tuple[Any, ...]]) -> None:
            raw: Any = conn.connection.dbapi_connection
            with raw.cursor() as cursor, cursor.copy(copy_sql) as out:
                for row in rows:
                    out.write_row(row + copy_shared)

        return _BulkWriter(copy, None)
    if dialect.name == "sqlite":
        marks = ["?"] * len(_STAGE_COLUMNS)
        for column in ("error_code", "error_description"):
            marks[_STAGE_COLUMNS.index(column)] = "NULLIF(?, '')"
        values = ", ".join(marks + [_sqlite_literal(value) for value in shared])
        sql = f"INSERT INTO recipients ({', '.join(columns)}) VALUES ({values})"

        def sqlite(rows: list[tuple[Any, ...]]) -> None:
            conn.exec_driver_sql(sql, rows)

        return _BulkWriter(sqlite, "")
    compiled = insert(recipients).compile(dialect=dialect, column_keys=list(columns))
    if compiled.positiontup is not None and tuple(compiled.positiontup) == columns:
        positional_sql = compiled.string

        def positional(rows: list[tuple[Any, ...]]) -> None:
            conn.exec_driver_sql(positional_sql, [row + shared for row in rows])

        return _BulkWriter(positional, None)

    def core(rows: list[tuple[Any, ...]]) -> None:
        conn.execute(
            insert(recipients),
            [dict(zip(columns, (*row, campaign_id, 0, updated_at), strict=True)) for row in rows],
        )

    return _BulkWriter(core, None)


#: messages rows per ``INSERT … RETURNING`` on SQLite; a smaller remainder is written in
#: power-of-two pieces, so the driver's statement cache holds a handful of texts, not one per size
_SQLITE_MESSAGES_BATCH = 256
_SQLITE_MESSAGE_COLUMNS = ("campaign_id", "digest", "wire_text", "unicode", "parts", "text")


def _sqlite_insert_messages(
    conn: Connection, campaign_id: int, new: dict[str, StagedValues]
) -> Iterable[tuple[str, int]]:
    """Insert a messages row for each payload of ``new``; (digest, id) of each.

    One multi-row ``INSERT … RETURNING`` per piece on the driver: each id comes back with its
    row. Looking the digests up afterwards was a second random probe of the
    (campaign_id, digest) index per distinct text, and SQLAlchemy's own batched RETURNING spent
    more in Python than the probe cost (see docs/PERFORMANCE.md, distinct texts at 1M rows).
    """
    values: list[object] = []
    for digest, row in new.items():
        _, _, _, parts, _, wire_text, unicode, *_ = row  # _UNPACKED order
        text = sms.readable(wire_text or "", unicode)
        values += (campaign_id, digest, wire_text, int(unicode), parts, text)
    width = len(_SQLITE_MESSAGE_COLUMNS)
    count = len(new)
    done = 0
    found: list[tuple[str, int]] = []
    while done < count:
        size = _SQLITE_MESSAGES_BATCH
        while size > count - done:
            size //= 2
        sql = _sqlite_messages_sql(size)
        piece = values[done * width : (done + size) * width]
        found += conn.exec_driver_sql(sql, tuple(piece)).all()
        done += size
    return found


@functools.lru_cache(maxsize=16)
def _sqlite_messages_sql(rows: int) -> str:
    row = "(" + ", ".join("?" * len(_SQLITE_MESSAGE_COLUMNS)) + ")"
    return (
        f"INSERT INTO messages ({', '.join(_SQLITE_MESSAGE_COLUMNS)}) VALUES "
        + ", ".join([row] * rows)
        + " RETURNING digest, id"
    )


def _sqlite_literal(value: object) -> str:
    """An int or a text as an SQLite literal (for the values every staged row shares)."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQLite literal for {type(value).__name__}")


class StagingMixin(CampaignsMixin):
    """Staging: every recipient written once, accepted or not, before anything is sent."""

    def stage_campaign(
        self,
        *,
        name: str,
        source: str,
        fingerprint: str,
        options: dict[str, object],
        rows: Iterable[StagedValues],
        batch_size: int = DEFAULT_STAGE_BATCH,
    ) -> tuple[Campaign, bool]:
        """Write a new campaign and all its rows in one transaction; (campaign, created?).

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
                    .values(status=CampaignStatus.READY, total=total)
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

    def _stage_rows(
        self,
        conn: Connection,
        campaign_id: int,
        rows: Iterable[StagedValues],
        batch_size: int,
    ) -> int:
        """Insert ``rows`` in batches, creating each distinct payload once; the row count.

        Each row becomes its column tuple (``_STAGE_COLUMNS``) as it arrives, and only that is
        held until its batch is written. Batching the ``StagedRow`` objects instead cost staging
        4–10% of its CPU, about half of it in the collector: CPython stops tracking a plain tuple
        of plain values but not a named tuple, so 5,000 of them surviving per batch meant three
        times the full collections (see docs/PERFORMANCE.md, same text at 1M rows).
        """
        digests: dict[str, int] = {}  # digest → messages.id, bounded
        message_id = digests.get
        seen: SeenDigests | None = None  # every digest the cache let go, once it has
        total = 0
        write, no_error = _bulk_writer(conn, campaign_id, _now())
        batch: list[tuple[Any, ...]] = []
        fresh: dict[str, StagedValues] = {}  # payloads not in ``digests`` yet: digest → a row
        waiting: list[tuple[int, str]] = []  # (index in batch, digest): rows awaiting that id

        def flush() -> None:
            nonlocal seen
            if fresh:
                self._ensure_messages(conn, campaign_id, fresh, digests, seen)
                for at, digest in waiting:
                    row = batch[at]
                    batch[at] = (*row[:_MESSAGE_ID], digests[digest], *row[_MESSAGE_ID + 1 :])
                fresh.clear()
                waiting.clear()
            write(batch)
            batch.clear()
            if len(digests) > MESSAGE_CACHE_SIZE:
                if seen is None:
                    seen = SeenDigests()
                seen.update(digests)
                digests.clear()

        for row in rows:
            # the fields in _UNPACKED order (checked against StagedRow's names at import)
            row_no, msisdn, status, parts, digest, wire_text, _, code, reason, fields = row
            if digest is None or wire_text is None:
                if status == _PENDING:
                    raise ValueError(f"row {row_no}: a pending row needs a digest and wire_text")
                message = None if digest is None else message_id(digest)
            else:
                message = message_id(digest)
                if message is None:
                    fresh.setdefault(digest, row)
                    waiting.append((len(batch), digest))
            # _clip inlined: this runs a million times
            batch.append(
                (
                    row_no,
                    msisdn[:MSISDN_LENGTH],
                    status,
                    message,
                    parts,
                    no_error if code is None else code[:ERROR_CODE_LENGTH],
                    no_error if reason is None else reason[:ERROR_DESCRIPTION_LENGTH],
                    fields,
                )
            )
            if len(batch) == batch_size:
                total += len(batch)
                flush()
        if batch:
            total += len(batch)
            flush()
        return total

    def _ensure_messages(
        self,
        conn: Connection,
        campaign_id: int,
        fresh: dict[str, StagedValues],
        digests: dict[str, int],
        seen: SeenDigests | None,
    ) -> None:
        """Give every payload of ``fresh`` (digest → a row carrying it) a messages row, and put
        its id in ``digests``; ``seen``: the digests the cache let go (None: none yet)."""
        new = fresh
        maybe = [] if seen is None else [digest for digest in new if digest in seen]
        if maybe:  # these may have been created before the cache was cleared
            digests.update(self._message_ids(conn, campaign_id, maybe))
            new = {d: row for d, row in new.items() if d not in digests}
            if not new:
                return
        if conn.dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):
            digests.update(_sqlite_insert_messages(conn, campaign_id, new))
            return
        payloads = []
        for digest, row in new.items():
            _, _, _, parts, _, wire_text, unicode, *_ = row  # _UNPACKED order
            payloads.append(
                {
                    "campaign_id": campaign_id,
                    "digest": digest,
                    "wire_text": wire_text,
                    "unicode": unicode,
                    "parts": parts,
                    "text": sms.readable(wire_text or "", unicode),
                }
            )
        conn.execute(insert(messages), payloads)
        digests.update(self._message_ids(conn, campaign_id, list(new)))

    @staticmethod
    def _message_ids(conn: Connection, campaign_id: int, wanted: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(wanted), _DIGEST_BATCH):
            some = wanted[start : start + _DIGEST_BATCH]
            some += [some[0]] * (_DIGEST_BATCH - len(some))  # one statement text (see above)
            rows = conn.execute(
                select(messages.c.digest, messages.c.id).where(
                    messages.c.campaign_id == campaign_id, messages.c.digest.in_(some)
                )
            )
            found.update((digest, int(message_id)) for digest, message_id in rows)
        return found

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
