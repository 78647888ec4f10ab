"""Applying delivery reports to recipient rows: keep each status once, move forward.

The write path of :meth:`~batch_sender.store.delivery.DeliveryStore.record` and of the inbox
(``inbox``): a batch of reports is matched without scanning ``recipients`` (``matching``) and
applied with a few set-based statements per batch (``_WriteSql``: driver SQL per engine); a
report that matched nothing but carries an API message ID is kept (``inbox``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from batch_sender.gateway import delivery_codes as statuses
from batch_sender.states import Status
from batch_sender.store.matching import CampaignIds, Seen, match
from batch_sender.store.reports import Applied, DeliveryReport, _naive
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    UTCDateTime,
    delivery_events,
)

log = logging.getLogger("batch_sender.store.delivery")

_e = delivery_events.c
_IN_BATCH = 500  # rows per multi-row statement


def _slices(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_BATCH):
        yield values[start : start + _IN_BATCH]


_SEEN_ANY = select(_e.recipient_id, _e.status).where(
    _e.recipient_id.in_(bindparam("b_rids", expanding=True))
)


def _record(
    conn: Connection,
    reports: Sequence[DeliveryReport],
    now: datetime,
    hints: Mapping[str, int] | None = None,
    campaign_ids: CampaignIds | None = None,
) -> list[Applied]:
    """Match every report (a few set-based lookups), apply, keep what matched nothing.

    ``hints``: ``{api id: recipient id}`` found on a read connection for reports without a
    number; checked here under lock.
    """
    from batch_sender.store import inbox  # (inbox builds on this module)

    rows: dict[int, dict[str, Any]] = {}
    seen = Seen()
    known = campaign_ids or CampaignIds()
    known.fresh = False
    targets, looked = match(conn, reports, rows, hints or {}, seen, known)
    results: list[Applied | None] = [None] * len(reports)
    known_api = {rid: row["api_message_id"] for rid, row in rows.items()}
    matched = [(i, rid) for i, rid in enumerate(targets) if rid is not None]
    applied = apply_to_rows(conn, [(rid, reports[i]) for i, rid in matched], rows, now, seen)
    for (i, _), done in zip(matched, applied, strict=True):
        results[i] = done
    waiting = [
        i
        for i, report in enumerate(reports)
        if results[i] is None
        and report.api_message_id
        and len(report.api_message_id) <= API_MESSAGE_ID_LENGTH
    ]
    if waiting:
        kept = inbox.keep(conn, [reports[i] for i in waiting], [looked[i] for i in waiting], now)
        for i, kept_as in zip(waiting, kept, strict=True):
            results[i] = kept_as
    # rows whose API ID a report just taught us (found by cliMsgId + number): what was kept
    # for that ID, in this batch or before, applies now
    learned = {
        str(row["api_message_id"]): rid
        for rid, row in rows.items()
        if known_api[rid] is None and row["api_message_id"]
    }
    if learned:
        inbox.apply_recorded(conn, learned, now)
    out: list[Applied] = []
    for i, outcome in enumerate(results):
        if outcome is None:
            report = reports[i]
            log.warning(
                "delivery status %s for unknown message (apiMsgId %.70r, cliMsgId %.40r, to %.70r)",
                report.status,
                report.api_message_id,
                report.client_message_id,
                report.to,
            )
        out.append(Applied.UNKNOWN if outcome is None else outcome)
    return out


def apply_to_rows(
    conn: Connection,
    items: Sequence[tuple[int, DeliveryReport]],
    rows: dict[int, dict[str, Any]],
    now: datetime,
    known: Seen | None = None,
) -> list[Applied]:
    """Apply each (recipient id, report) in order to its row in ``rows`` (loaded and locked).

    Every distinct status is kept once in ``delivery_events``; the delivery status only moves
    forward; a report for an ``unknown`` row makes it ``sent``. Two statements for the batch
    (one on PostgreSQL), and one more to read the recorded statuses of rows ``known`` lacks.
    """
    if not items:
        return []
    rids = sorted({rid for rid, _ in items} - (known.covered if known else set()))
    seen = set(known.statuses) if known else set()
    if rids:
        seen.update((int(rid), str(s)) for rid, s in conn.execute(_SEEN_ANY, {"b_rids": rids}))
    events: list[tuple[int, str, datetime | None, float | None, str]] = []
    dirty: set[int] = set()
    out: list[Applied] = []
    for rid, report in items:
        if (rid, report.status) in seen:
            out.append(Applied.DUPLICATE)
            continue
        seen.add((rid, report.status))
        row = rows[rid]
        status_at = _naive(report.status_at)
        events.append((rid, report.status, status_at, report.charge, report.source))
        moved = statuses.supersedes(report.status, row["delivery_status"])
        if moved:
            row["delivery_status"] = report.status
            row["delivered_at"] = status_at or now
        if report.charge is not None and (moved or row["charge"] is None):
            row["charge"] = report.charge
        if row["api_message_id"] is None and report.api_message_id:
            row["api_message_id"] = report.api_message_id[:API_MESSAGE_ID_LENGTH]
        if row["status"] == Status.UNKNOWN.value:  # the gateway had it after all
            row.update(status=Status.SENT.value, error_code=None, error_description=None)
        dirty.add(rid)
        out.append(Applied.UPDATED if moved else Applied.RECORDED)
    sql = _WriteSql.for_dialect(conn.dialect)
    stamp = sql.time(now)
    event_values = [
        (rid, status, sql.time(at), charge, source, stamp)
        for rid, status, at, charge, source in events
    ]
    if dirty:
        sql.write(
            conn,
            event_values,
            [
                (
                    row["delivery_status"],
                    sql.time(_naive(row["delivered_at"])),
                    row["charge"],
                    row["api_message_id"],
                    row["status"],
                    row["error_code"],
                    row["error_description"],
                    stamp,
                    rid,
                )
                for rid, row in ((rid, rows[rid]) for rid in sorted(dirty))
            ],
        )
    return out


class _WriteSql:
    """The two writes of :func:`apply_to_rows` as driver SQL, one statement each per batch where
    the driver would send a statement per row (building Core parameters per row was most of the
    receiver's time; PostgreSQL and MariaDB then also paid a statement per row)."""

    _cache: dict[str, _WriteSql] = {}
    _EVENT_COLUMNS = "recipient_id, status, status_at, charge, source, received_at"
    _COLUMNS = (
        "delivery_status",
        "delivered_at",
        "charge",
        "api_message_id",
        "status",
        "error_code",
        "error_description",
        "updated_at",
    )
    _SET = ", ".join(f"{c} = {{{i}}}" for i, c in enumerate(_COLUMNS))

    def __init__(self, dialect: Any) -> None:
        self.name = dialect.name
        self.mark = m = "?" if dialect.paramstyle == "qmark" else "%s"
        self._to_db = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        self.insert_event = (
            f"INSERT INTO delivery_events ({self._EVENT_COLUMNS}) "
            f"VALUES ({m}, {m}, {m}, {m}, {m}, {m})"
        )
        self.update = "UPDATE recipients SET " + self._SET.format(*[m] * 8) + f" WHERE id = {m}"

    # PostgreSQL: both writes in one statement of constant text (the rows as arrays, unnest):
    # one round trip, and psycopg prepares it once instead of parsing a new VALUES list per batch
    _PG_WRITE = (
        "WITH new_events AS (INSERT INTO delivery_events (" + _EVENT_COLUMNS + ") "
        "SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::timestamp[], %s::numeric[], "
        "%s::varchar[], %s::timestamp[])) "
        "UPDATE recipients SET "
        + _SET.format(*(f"v.c{i}" for i in range(8)))
        + " FROM unnest(%s::varchar[], %s::timestamp[], %s::numeric[], %s::varchar[], "
        "%s::varchar[], %s::varchar[], %s::varchar[], %s::timestamp[], %s::bigint[]) "
        "AS v(c0, c1, c2, c3, c4, c5, c6, c7, id) WHERE recipients.id = v.id"
    )

    def write(
        self, conn: Connection, events: list[tuple[Any, ...]], updates: list[tuple[Any, ...]]
    ) -> None:
        """Insert ``events`` and update the rows (``updates``): one statement on PostgreSQL."""
        if self.name != "postgresql":
            self.insert_events(conn, events)
            self.update_rows(conn, updates)
            return
        columns = [list(c) for c in zip(*events, strict=True)]
        columns += [list(c) for c in zip(*updates, strict=True)]
        conn.exec_driver_sql(self._PG_WRITE, tuple(columns))

    def insert_events(self, conn: Connection, values: list[tuple[Any, ...]]) -> None:
        if self.name != "postgresql":  # sqlite3 in process; PyMySQL rewrites it multi-row
            conn.exec_driver_sql(self.insert_event, values)
            return
        for part in _slices(values):
            row = "(" + ", ".join(["%s"] * 6) + ")"
            conn.exec_driver_sql(
                f"INSERT INTO delivery_events ({self._EVENT_COLUMNS}) VALUES "
                + ", ".join([row] * len(part)),
                tuple(v for r in part for v in r),
            )

    def update_rows(self, conn: Connection, values: list[tuple[Any, ...]]) -> None:
        if self.name == "sqlite":
            conn.exec_driver_sql(self.update, values)
            return
        for part in _slices(values):
            flat = tuple(v for r in part for v in r)
            if self.name == "postgresql":
                row = (
                    "(%s::varchar, %s::timestamp, %s::numeric, %s::varchar, %s::varchar, "
                    "%s::varchar, %s::varchar, %s::timestamp, %s::bigint)"
                )
                conn.exec_driver_sql(
                    "UPDATE recipients SET "
                    + self._SET.format(*(f"v.c{i}" for i in range(8)))
                    + " FROM (VALUES "
                    + ", ".join([row] * len(part))
                    + ") AS v(c0, c1, c2, c3, c4, c5, c6, c7, id) WHERE recipients.id = v.id",
                    flat,
                )
            else:  # MariaDB/MySQL: a join with the rows as a derived table
                first = "SELECT " + ", ".join(f"%s AS c{i}" for i in range(8)) + ", %s AS id"
                rest = " UNION ALL SELECT " + ", ".join(["%s"] * 9)
                conn.exec_driver_sql(
                    f"UPDATE recipients r JOIN ({first}{rest * (len(part) - 1)}) v "
                    "ON r.id = v.id SET "
                    + ", ".join(f"r.{c} = v.c{i}" for i, c in enumerate(self._COLUMNS)),
                    flat,
                )

    @classmethod
    def for_dialect(cls, dialect: Any) -> _WriteSql:
        key = f"{dialect.name}+{dialect.driver}"
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(dialect)
        return found

    def time(self, value: datetime | None) -> Any:
        if value is None or self._to_db is None:
            return value
        return self._to_db(value)
