"""Delivery statuses in the results database: record reports, find what to track, summarise.

A *report* is one status of one message, from a callback or from ``querymsg``; both are recorded
by :meth:`DeliveryStore.record`, with the same rules:

* the message is found without scanning recipients: by recipient id (``querymsg``), by client
  message ID + number, or by API message ID among the rows of the number (each an index);
* a report that matches nothing yet but carries an API message ID is kept in ``receipt_inbox``
  (a callback can overtake the recording of the ``sendmsg`` answer) and applied exactly once
  when the ID is recorded (``inbox``: the recording path looks there, in its own transaction);
* every distinct status is kept once in ``delivery_events`` (the gateway retries callbacks);
* the recipient's ``delivery_status`` only moves forward (:func:`statuses.supersedes`): a late
  003 never replaces a final 004;
* a report for an ``unknown`` row proves the gateway accepted it: the row becomes ``sent``.

A batch of reports is matched and applied with a few set-based statements, under a lock on the
recipient rows (``SELECT … FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``), so concurrent
duplicates are serialised.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from batch_sender.gateway import delivery_codes as statuses
from batch_sender.states import Status
from batch_sender.store import engine as engines
from batch_sender.store.matching import CampaignIds, _bare
from batch_sender.store.receipts import _record
from batch_sender.store.records import PREFIX_DIGITS, PrefixTally
from batch_sender.store.reports import (  # noqa: F401 (re-exported: the value types of a report)
    Applied,
    DeliveryReport,
    _now,
)
from batch_sender.store.tables import (
    UTCDateTime,
    delivery_events,
    recipients,
)

if TYPE_CHECKING:
    from batch_sender.store.facade import Store

__all__ = [
    "Applied",
    "DeliveryCounts",
    "DeliveryReport",
    "DeliveryStore",
    "ReceiptWriter",
    "SlowDelivery",
    "TimelineBucket",
    "Tracked",
]

log = logging.getLogger(__name__)

SOURCES = ("callback", "querymsg")  # delivery_events.source values
TIMELINE_BUCKETS = 60  # bars in the deliveries-over-time chart

_r = recipients.c
_e = delivery_events.c


@dataclass(frozen=True, slots=True)
class Tracked:
    """A sent recipient whose delivery is not final yet: what ``track`` asks about."""

    recipient_id: int
    api_message_id: str
    delivery_status: str | None


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """Where a campaign's accepted messages stand, and what they cost."""

    accepted: int  # rows the gateway accepted (status sent)
    delivered: int  # delivery status 004
    undelivered: int  # a final error status
    in_progress: int  # a non-final status (008, 003, 002, 011)
    charge: float  # credits reported by callbacks, summed
    charged: int  # rows whose charge is known

    @property
    def no_report(self) -> int:
        """Accepted rows without any delivery status yet (unknown delivery)."""
        return max(0, self.accepted - self.delivered - self.undelivered - self.in_progress)

    @property
    def delivery_rate(self) -> float | None:
        """Delivered share of accepted messages (None when nothing was accepted)."""
        return self.delivered / self.accepted if self.accepted else None


@dataclass(frozen=True, slots=True)
class SlowDelivery:
    """A delivered message and how long it took from the send to the handset receipt."""

    row_no: int
    msisdn: str
    api_message_id: str | None
    sent_at: datetime
    delivered_at: datetime
    seconds: float


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    """Final statuses reported in ``[start, start + width)``."""

    start: datetime
    width: float  # seconds
    delivered: int
    undelivered: int


class DeliveryStore:
    """Delivery-status SQL over an open :class:`Store` (which owns the engine)."""

    def __init__(self, store: Store, *, durable: bool = False) -> None:
        self._engine: Engine = store.engine
        self._url = self._engine.url
        #: SQLite: commit with synchronous=FULL (a receiver answers 2xx only for what survives a
        #: power cut); elsewhere the default commit already waits for the log flush
        self._durable = durable

    # -- writing -----------------------------------------------------------------------------

    def record(self, reports: Sequence[DeliveryReport]) -> list[Applied]:
        """Record ``reports`` in one transaction; what each one did, in order.

        A report that matches no recipient but carries an apiMsgId is kept in the inbox
        (:data:`Applied.KEPT`) and applied when that ID is recorded.
        """
        if not reports:
            return []
        self._check(reports)
        now = _now()
        with engines.store_errors("recording delivery statuses", self._url):
            hints = self._hints(reports)
            with engines.begin_write(self._engine, durable=self._durable) as conn:
                return _record(conn, reports, now, hints)

    def _hints(self, reports: Sequence[DeliveryReport]) -> dict[str, int]:
        """An apiMsgId without a number to look it up by: searched before the write lock."""
        bare = [r.api_message_id for r in reports if r.api_message_id and _bare(r)]
        if not bare:
            return {}
        from batch_sender.store import inbox

        with self._engine.connect() as conn:
            return inbox.recorded_ids(conn, bare)

    @staticmethod
    def _check(reports: Sequence[DeliveryReport]) -> None:
        for report in reports:
            if report.source not in SOURCES:
                raise ValueError(f"unknown report source {report.source!r}")
            if statuses.normalise(report.status) != report.status:
                raise ValueError(f"not a 3-digit status: {report.status!r}")

    def writer(self) -> ReceiptWriter:
        """:meth:`record` and :meth:`sweep` on one held connection, for one writer thread."""
        return ReceiptWriter(self)

    def sweep(self, *, now: datetime | None = None) -> int:
        """Look for the IDs of inbox receipts that no locked lookup could settle; apply them.

        For receipts without a usable number: the rows are searched on a read connection (a
        scan, but outside SQLite's write lock), the matches applied under it by primary key.
        Returns how many receipts were applied.
        """
        from batch_sender.store import inbox

        when = now or _now()
        with engines.store_errors("matching kept receipts", self._url):
            with self._engine.connect() as conn:
                due = inbox.due(conn, when)
                if not due:
                    return 0
                found = inbox.recorded_ids(conn, [api for _, api in due])
            with engines.begin_write(self._engine, durable=self._durable) as conn:
                applied = inbox.apply_recorded(conn, found, when) if found else 0
                inbox.swept(conn, [i for i, _ in due], when)
                inbox.prune(conn, when)
        return applied

    # -- tracking ----------------------------------------------------------------------------

    def awaiting(
        self,
        campaign_id: int,
        *,
        sent_after: datetime | None = None,
        after_id: int = 0,
        limit: int = 500,
    ) -> list[Tracked]:
        """Sent rows with an API message ID and no final delivery status, by id after ``after_id``.

        ``sent_after`` leaves out messages older than the gateway keeps answering for.
        """
        stmt = (
            select(_r.id, _r.api_message_id, _r.delivery_status)
            .where(
                _r.campaign_id == campaign_id,
                _r.status == Status.SENT.value,
                _r.api_message_id.is_not(None),
                or_(_r.delivery_status.is_(None), _r.delivery_status.not_in(statuses.FINAL_CODES)),
                _r.id > after_id,
            )
            .order_by(_r.id)
            .limit(limit)
        )
        if sent_after is not None:
            stmt = stmt.where(
                or_(_r.claimed_at.is_(None), _r.claimed_at >= literal(sent_after, UTCDateTime()))
            )
        with engines.store_errors("reading rows to track", self._url), self._engine.connect() as c:
            return [Tracked(int(i), str(a), d) for i, a, d in c.execute(stmt)]

    def pending_tally(self, campaign_id: int, *, digits: int = PREFIX_DIGITS) -> PrefixTally:
        """Parts still to send per number prefix (``pending`` rows), for the cost estimate."""
        prefix = func.substr(_r.msisdn, 1, digits).label("prefix")
        stmt = (
            select(prefix, func.min(_r.msisdn), func.count(), func.coalesce(func.sum(_r.parts), 0))
            .where(_r.campaign_id == campaign_id, _r.status == Status.PENDING.value)
            .group_by(prefix)
        )
        tally = PrefixTally(digits=digits)
        with engines.store_errors("summing parts", self._url), self._engine.connect() as c:
            for key, sample, recipients_, parts in c.execute(stmt):
                tally.parts[key] = int(parts)
                tally.recipients[key] = int(recipients_)
                tally.sample[key] = sample
        return tally

    # -- reading -----------------------------------------------------------------------------

    def counts(self, campaign_id: int) -> DeliveryCounts:
        """Accepted, delivered, undelivered and in-progress rows and the charge of a campaign."""
        status = _r.delivery_status

        def tally(condition: ColumnElement[bool]) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        stmt = select(
            tally(_r.status == Status.SENT.value),
            tally(status == statuses.DELIVERED),
            tally(status.in_(statuses.FAILED_FINAL)),
            tally(and_(status.is_not(None), status.not_in([*statuses.FINAL_CODES, "001"]))),
            func.coalesce(func.sum(_r.charge), 0),
            func.count(_r.charge),
        ).where(_r.campaign_id == campaign_id)
        with engines.store_errors("counting deliveries", self._url), self._engine.connect() as c:
            accepted, delivered, undelivered, progress, charge, charged = c.execute(stmt).one()
        return DeliveryCounts(
            accepted=int(accepted),
            delivered=int(delivered),
            undelivered=int(undelivered),
            in_progress=int(progress),
            charge=float(charge),
            charged=int(charged),
        )

    def status_counts(self, campaign_id: int) -> list[tuple[str, int]]:
        """(delivery status, rows) of every status present, most common first."""
        n = func.count().label("n")
        stmt = (
            select(_r.delivery_status, n)
            .where(_r.campaign_id == campaign_id, _r.delivery_status.is_not(None))
            .group_by(_r.delivery_status)
            .order_by(n.desc(), _r.delivery_status)
        )
        with engines.store_errors("counting deliveries", self._url), self._engine.connect() as c:
            return [(str(code), int(count)) for code, count in c.execute(stmt)]

    def slowest(self, campaign_id: int, limit: int = 10) -> list[SlowDelivery]:
        """The delivered messages that took longest from send (claim) to handset receipt."""
        with engines.store_errors("reading delivery times", self._url), self._engine.connect() as c:
            took = _seconds_between(c, _r.claimed_at, _r.delivered_at).label("took")
            rows = c.execute(
                select(_r.row_no, _r.msisdn, _r.api_message_id, _r.claimed_at, _r.delivered_at)
                .where(
                    _r.campaign_id == campaign_id,
                    _r.delivery_status == statuses.DELIVERED,
                    _r.claimed_at.is_not(None),
                    _r.delivered_at.is_not(None),
                )
                .order_by(took.desc(), _r.row_no)
                .limit(limit)
            ).all()
        return [
            SlowDelivery(
                row_no=int(row.row_no),
                msisdn=row.msisdn,
                api_message_id=row.api_message_id,
                sent_at=row.claimed_at,
                delivered_at=row.delivered_at,
                seconds=max(0.0, (row.delivered_at - row.claimed_at).total_seconds()),
            )
            for row in rows
        ]

    def timeline(
        self, campaign_id: int, *, buckets: int = TIMELINE_BUCKETS
    ) -> list[TimelineBucket]:
        """Final statuses over time from the first send, in at most ``buckets`` equal intervals.

        Counted in the database (no per-row transfer); empty when nothing is final yet.
        """
        final = (_r.campaign_id == campaign_id, _r.delivery_status.in_(statuses.FINAL_CODES))
        with engines.store_errors("reading delivery times", self._url), self._engine.connect() as c:
            origin, end = c.execute(
                select(func.min(_r.claimed_at), func.max(_r.delivered_at)).where(*final)
            ).one()
            if origin is None or end is None:
                return []
            span = max(1.0, (end - origin).total_seconds())
            width = float(max(1, math.ceil(span / buckets)))
            # (+ half a millisecond: SQLite's julianday arithmetic lands 30 s at 29.99999… s)
            offset = _seconds_between(c, literal(origin, UTCDateTime()), _r.delivered_at) + 0.0005
            index = (
                cast(offset / width, Integer)
                if c.dialect.name == "sqlite"
                else func.floor(offset / width)
            ).label("bucket")
            delivered = func.sum(case((_r.delivery_status == statuses.DELIVERED, 1), else_=0))
            rows = c.execute(
                select(index, delivered, func.count())
                .where(*final, _r.delivered_at.is_not(None))
                .group_by(index)
                .order_by(index)
            ).all()
        found = {max(0, int(b)): (int(d), int(n) - int(d)) for b, d, n in rows}
        last = max(found, default=0)
        return [
            TimelineBucket(
                start=origin + timedelta(seconds=i * width),
                width=width,
                delivered=found.get(i, (0, 0))[0],
                undelivered=found.get(i, (0, 0))[1],
            )
            for i in range(last + 1)
        ]

    def events(self, recipient_id: int) -> list[dict[str, Any]]:
        """The delivery history of one recipient, in the order it was received."""
        stmt = (
            select(_e.status, _e.status_at, _e.charge, _e.source, _e.received_at)
            .where(_e.recipient_id == recipient_id)
            .order_by(_e.id)
        )
        with (
            engines.store_errors("reading delivery events", self._url),
            self._engine.connect() as c,
        ):
            return [dict(row) for row in c.execute(stmt).mappings()]


class ReceiptWriter:
    """:meth:`DeliveryStore.record` on a connection held across batches (one thread's).

    The receiver's writer commits a batch every few milliseconds; a connection from the pool per
    batch cost a pre-ping round trip each time (PostgreSQL, MariaDB) and two pragmas (SQLite).
    A failed batch throws the connection away: the next one connects afresh (a restarted
    server, a dropped link). :meth:`sweep` reads on the pool as before (outside the lock).
    """

    def __init__(self, deliveries: DeliveryStore) -> None:
        self._deliveries = deliveries
        self._conn: Connection | None = None
        self._campaigns = CampaignIds()  # read again whenever a report matches nothing

    def record(self, reports: Sequence[DeliveryReport]) -> list[Applied]:
        """:meth:`DeliveryStore.record`, on the held connection."""
        if not reports:
            return []
        d = self._deliveries
        d._check(reports)
        now = _now()
        with engines.store_errors("recording delivery statuses", d._url):
            hints = d._hints(reports)
            for attempt in (1, 2):
                conn = self._held()
                try:
                    with conn.begin():
                        return _record(conn, reports, now, hints, self._campaigns)
                except DBAPIError as exc:
                    self._drop(broken=True)
                    # a connection the server dropped while it sat idle (a restart, a timeout):
                    # once more on a new one. Safe even if it was lost in COMMIT: a report
                    # recorded already is a duplicate the second time (unique keys)
                    if not exc.connection_invalidated or attempt == 2:
                        raise
                    log.info("the database closed the receiver's connection; reconnecting")
                except BaseException:
                    self._drop(broken=True)
                    raise
        raise AssertionError("unreachable")

    def sweep(self) -> int:
        """:meth:`DeliveryStore.sweep` (its own connections)."""
        return self._deliveries.sweep()

    def close(self) -> None:
        """Give the connection back (idempotent)."""
        self._drop(broken=False)

    def _held(self) -> Connection:
        if self._conn is None:
            d = self._deliveries
            self._conn = engines.hold_writer(d._engine, durable=d._durable)
        return self._conn

    def _drop(self, *, broken: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                engines.release_writer(conn, broken=broken)
            except Exception:  # a dead connection may fail to close: it is gone either way
                log.debug("closing the writer's connection failed", exc_info=True)


# -- applying reports (the receiver's writer, the inbox, querymsg) -------------------------------


def _seconds_between(conn: Connection, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, as SQL for this connection's database."""
    name = conn.dialect.name
    if name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    if name == "postgresql":
        return cast(func.extract("epoch", end - start), Float)
    if name in ("mysql", "mariadb"):
        return func.timestampdiff(literal_column("MICROSECOND"), start, end) / 1e6
    raise NotImplementedError(f"delivery times on {name}")
