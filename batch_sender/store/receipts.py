"""Applying delivery reports to recipient rows: match them, keep each status once, move forward.

The write path of :meth:`~batch_sender.store.delivery.DeliveryStore.record` and of the inbox
(``inbox``): a batch of reports is matched without scanning ``recipients`` (by recipient id, by
client message ID + number, or by API message ID among the rows of the number) and applied with a
few set-based statements per batch (``_WriteSql``: driver SQL per engine).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    bindparam,
    select,
)
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from batch_sender.gateway import delivery_codes as statuses
from batch_sender.states import Status
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    CLIENT_MESSAGE_ID_LENGTH,
    MSISDN_LENGTH,
    UTCDateTime,
    campaigns,
    delivery_events,
    recipients,
)

log = logging.getLogger("batch_sender.store.delivery")

_r = recipients.c
_e = delivery_events.c


# Statements of the hot path (one callback after another), built once.
_FOUND = (
    _r.id,
    _r.status,
    _r.api_message_id,
    _r.delivery_status,
    _r.delivered_at,
    _r.charge,
    _r.error_code,
    _r.error_description,
)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One status of one message, as a callback or ``querymsg`` told it."""

    status: str  # 3-digit code (statuses.normalise)
    api_message_id: str | None = None
    client_message_id: str | None = None
    to: str | None = None  # with client_message_id, identifies a message of a multi-number request
    status_at: datetime | None = None  # when the status changed, per the gateway
    charge: float | None = None  # credits
    source: str = "callback"
    recipient_id: int | None = None  # when the sender knows the row (querymsg of a tracked row)


class Applied(enum.StrEnum):
    """What recording one report did."""

    UPDATED = "updated"  # the recipient's delivery status moved forward
    RECORDED = "recorded"  # kept in the history only (late or out of order)
    DUPLICATE = "duplicate"  # this status of this message was recorded before
    KEPT = "kept"  # no recipient has this apiMsgId yet: kept, applied when it is recorded
    UNKNOWN = "unknown"  # no message ID to keep it by, and nothing matched: nothing written


_ROW = (*_FOUND, _r.client_message_id, _r.msisdn)
_IN_BATCH = 500  # rows per multi-row statement


def _slices(values: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_BATCH):
        yield values[start : start + _IN_BATCH]


_SEEN_ANY = select(_e.recipient_id, _e.status).where(
    _e.recipient_id.in_(bindparam("b_rids", expanding=True))
)


class Seen:
    """The statuses recorded so far (``delivery_events``) of the rows a batch loaded with them."""

    __slots__ = ("covered", "statuses")

    def __init__(self) -> None:
        self.covered: set[int] = set()  # recipient ids whose every recorded status is in statuses
        self.statuses: set[tuple[int, str]] = set()  # (recipient id, status)


_SEEN_COLUMN = _e.status.label("seen_status")
_WITH_EVENTS = recipients.outerjoin(delivery_events, _e.recipient_id == _r.id)


def _with_events(condition: ColumnElement[bool]) -> Select[Any]:
    """Rows matching ``condition`` with their recorded statuses (an outer join with
    ``delivery_events``; the lock on the recipient rows, ``FOR UPDATE OF`` where the engine has
    it): one round trip fewer per batch than reading the statuses after."""
    return (
        select(*_ROW, _SEEN_COLUMN)
        .select_from(_WITH_EVENTS)
        .where(condition)
        .order_by(_r.id)
        .with_for_update(of=recipients)
    )


# built once (constructing and keying a new statement per batch was a tenth of SQLite's CPU);
# the campaign ids as values, not a subquery: the indexes lead with campaign_id, and with a
# subquery MariaDB read every row of the campaign and PostgreSQL the whole cliMsgId index
_CAMPAIGN_IDS: BindParameter[int] = bindparam("b_cids", expanding=True)
_BY_CLI = _with_events(
    and_(
        _r.campaign_id.in_(_CAMPAIGN_IDS),
        _r.client_message_id.in_(bindparam("b_clis", expanding=True)),
        _r.msisdn.in_(bindparam("b_tos", expanding=True)),
    )
)
_BY_NUMBER = _with_events(
    and_(_r.campaign_id.in_(_CAMPAIGN_IDS), _r.msisdn.in_(bindparam("b_tos", expanding=True)))
)
_BY_ID = _with_events(_r.id.in_(bindparam("b_rids", expanding=True)))


def load_rows(
    conn: Connection,
    condition: ColumnElement[bool] | Select[Any],
    seen: Seen | None = None,
    params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Recipient rows as mutable dicts, locked for this transaction, lowest id first.

    ``condition``: a WHERE clause, or with ``seen`` one of the statements above (``params``
    its values); their recorded statuses are added to ``seen``.
    """
    if seen is None:
        assert not isinstance(condition, Select)
        stmt = select(*_ROW).where(condition).order_by(_r.id).with_for_update()
        return [dict(row) for row in conn.execute(stmt).mappings()]
    joined = condition if isinstance(condition, Select) else _with_events(condition)
    rows: dict[int, dict[str, Any]] = {}
    for found in conn.execute(joined, params or {}).mappings():
        rid = found["id"]
        if rid not in rows:
            row = dict(found)
            del row["seen_status"]
            rows[rid] = row
            seen.covered.add(rid)
        if found["seen_status"] is not None:
            seen.statuses.add((rid, str(found["seen_status"])))
    return list(rows.values())


def _bare(report: DeliveryReport) -> bool:
    """Whether only a scan could find this report's row (an apiMsgId and nothing indexed)."""
    return (
        report.recipient_id is None
        and _usable_to(report) is None
        and report.api_message_id is not None
        and len(report.api_message_id) <= API_MESSAGE_ID_LENGTH
    )


def _usable_to(report: DeliveryReport) -> str | None:
    to = report.to.lstrip("+") if report.to else None
    return to if to and len(to) <= MSISDN_LENGTH else None


class CampaignIds:
    """The campaign ids the row lookups name, kept between one writer's batches.

    Read again before a batch declares a report unmatched (a campaign created since), so a
    kept list never costs a match; a campaign deleted since only costs an empty index range.
    """

    __slots__ = ("_ids", "fresh")

    def __init__(self) -> None:
        self._ids: list[int] | None = None
        self.fresh = False  # read in this batch

    def ids(self, conn: Connection, *, fresh: bool = False) -> list[int]:
        if self._ids is None or (fresh and not self.fresh):
            self._ids = sorted(int(i) for i in conn.execute(select(campaigns.c.id)).scalars())
            self.fresh = True
        return self._ids


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
    targets, looked = _match(conn, reports, rows, hints or {}, seen, known)
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


def _match(
    conn: Connection,
    reports: Sequence[DeliveryReport],
    rows: dict[int, dict[str, Any]],
    hints: Mapping[str, int],
    seen: Seen,
    known: CampaignIds,
) -> tuple[list[int | None], list[bool]]:
    """The recipient id of each report (or None), its row put in ``rows`` (locked).

    By recipient id (querymsg), by cliMsgId + number (the (campaign_id, client_message_id)
    index), then by apiMsgId among the rows of the number (the (campaign_id, msisdn) index): no
    lookup scans recipients. ``looked[i]``: report i's number was searched under lock, so if its
    ID is recorded later, the recording sees the kept receipt (see ``inbox``).
    """
    n = len(reports)
    targets: list[int | None] = [None] * n
    looked = [False] * n
    usable_to = _usable_to

    hinted = {
        i: hints[str(r.api_message_id)]
        for i, r in enumerate(reports)
        if r.recipient_id is None and r.api_message_id in hints
    }
    by_id = {r.recipient_id for r in reports if r.recipient_id is not None}
    if by_id or hinted:
        wanted = sorted(by_id | set(hinted.values()))
        for row in load_rows(conn, _BY_ID, seen, {"b_rids": wanted}):
            rows[row["id"]] = row
        for i, report in enumerate(reports):
            if report.recipient_id in rows:
                targets[i] = report.recipient_id
            elif i in hinted:
                held = rows.get(hinted[i])
                if held is not None and held["api_message_id"] == report.api_message_id:
                    targets[i] = hinted[i]
    if not any(usable_to(r) for r in reports):
        return targets, looked
    ids = known.ids(conn)
    _lookup(conn, reports, targets, looked, rows, seen, ids)
    unmatched = any(t is None and usable_to(r) for t, r in zip(targets, reports, strict=True))
    # a report matched nothing: perhaps in a campaign created since the ids were read
    if unmatched and not known.fresh and known.ids(conn, fresh=True) != ids:
        _lookup(conn, reports, targets, looked, rows, seen, known.ids(conn))
    return targets, looked


def _lookup(
    conn: Connection,
    reports: Sequence[DeliveryReport],
    targets: list[int | None],
    looked: list[bool],
    rows: dict[int, dict[str, Any]],
    seen: Seen,
    campaign_ids: list[int],
) -> None:
    """Match the reports without a target yet by cliMsgId + number, then by number."""
    usable_to = _usable_to
    pairs = {
        (r.client_message_id, usable_to(r))
        for i, r in enumerate(reports)
        if targets[i] is None
        and r.client_message_id
        and len(r.client_message_id) <= CLIENT_MESSAGE_ID_LENGTH
        and usable_to(r)
    }
    if pairs:
        found: dict[tuple[str, str], int] = {}
        for row in load_rows(
            conn,
            _BY_CLI,
            seen,
            {
                "b_cids": campaign_ids,
                "b_clis": sorted({c for c, _ in pairs}),
                "b_tos": sorted({str(t) for _, t in pairs}),
            },
        ):
            rows.setdefault(row["id"], row)
            found.setdefault((row["client_message_id"], row["msisdn"]), row["id"])
        for i, r in enumerate(reports):
            if targets[i] is None and r.client_message_id:
                targets[i] = found.get((r.client_message_id, usable_to(r) or ""))
    numbers = {
        usable_to(r)
        for i, r in enumerate(reports)
        if targets[i] is None and r.api_message_id and usable_to(r)
    }
    if numbers:
        by_api: dict[tuple[str, str], int] = {}
        for row in load_rows(
            conn, _BY_NUMBER, seen, {"b_cids": campaign_ids, "b_tos": sorted(map(str, numbers))}
        ):
            rows.setdefault(row["id"], row)
            if row["api_message_id"]:
                by_api.setdefault((row["msisdn"], row["api_message_id"]), row["id"])
        for i, r in enumerate(reports):
            to = usable_to(r)
            if targets[i] is None and r.api_message_id and to:
                looked[i] = True
                targets[i] = by_api.get((to, r.api_message_id[:API_MESSAGE_ID_LENGTH]))


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


def _naive(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value
