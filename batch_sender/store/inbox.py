"""Receipts kept until their apiMsgId is recorded: the ``receipt_inbox`` table.

A delivery callback can overtake the recording of the ``sendmsg`` answer. One that matches no
recipient yet is kept here, answered 2xx once committed, and applied exactly once, whichever
comes first:

* the receiver looked the number's rows up under lock and did not find the ID: the run's
  recording of the ID (:func:`applied_on_record`, in the same transaction as the outcomes)
  sees the kept receipt, because on every engine one of the two transactions waits for the
  other (the row lock; SQLite's single writer);
* a receipt without a usable number (or as a safety net, any receipt still kept a minute on):
  :func:`due` / :func:`recorded_ids` look for the ID among the recorded rows on a read
  connection, a scan, but outside SQLite's write lock, and :func:`apply_recorded` applies what
  was found by primary key.

The table holds only what is waiting, so its index is small: the recording path pays one
``SELECT … LIMIT 1`` per transaction while it is empty. Receipts for IDs no run ever records are
pruned after :data:`RETENTION`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from batch_sender.store.matching import load_rows
from batch_sender.store.receipts import apply_to_rows
from batch_sender.store.records import Outcome, SentOutcomes
from batch_sender.store.reports import Applied, DeliveryReport, _naive, _now
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    MSISDN_LENGTH,
    receipt_inbox,
    recipients,
)

__all__ = [
    "RETENTION",
    "SWEEP_DELAYS",
    "applied_on_record",
    "apply_recorded",
    "due",
    "keep",
    "prune",
    "recorded_ids",
    "swept",
]

#: seconds after arrival a kept receipt is looked for among the recorded rows: soon when no
#: locked lookup by number was possible, once more a minute on (a safety net)
SWEEP_DELAYS = (2.0, 60.0)
RETENTION = timedelta(days=7)  # a receipt no run recorded the ID of by then is dropped
SWEEP_BATCH = 1000  # kept receipts looked for per sweep
_IN_BATCH = 500  # values per IN list

_i = receipt_inbox.c
_r = recipients.c
_ANY = select(_i.id).limit(1)
_BY_API = select(receipt_inbox).where(_i.api_message_id.in_(bindparam("b_apis", expanding=True)))


def _slices(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_BATCH):
        yield list(values[start : start + _IN_BATCH])


def keep(
    conn: Connection, reports: Sequence[DeliveryReport], looked: Sequence[bool], now: datetime
) -> list[Applied]:
    """Keep reports that matched nothing: KEPT, or DUPLICATE when that status is kept already."""
    apis = sorted({str(r.api_message_id) for r in reports})
    present: set[tuple[str, str]] = set()
    for part in _slices(apis):
        present.update(
            (str(a), str(s))
            for a, s in conn.execute(
                select(_i.api_message_id, _i.status).where(_i.api_message_id.in_(part))
            )
        )
    values: list[dict[str, Any]] = []
    out: list[Applied] = []
    for report, by_number in zip(reports, looked, strict=True):
        key = (str(report.api_message_id), report.status)
        if key in present:
            out.append(Applied.DUPLICATE)
            continue
        present.add(key)
        delay = SWEEP_DELAYS[1] if by_number else SWEEP_DELAYS[0]
        values.append(
            {
                "api_message_id": key[0],
                "status": report.status,
                "status_at": _naive(report.status_at),
                "charge": report.charge,
                "client_message_id": report.client_message_id,
                "msisdn": (report.to or "")[:MSISDN_LENGTH] or None,
                "source": report.source,
                "received_at": now,
                "sweep_at": now + timedelta(seconds=delay),
            }
        )
        out.append(Applied.KEPT)
    if values:
        conn.execute(insert(receipt_inbox), values)
    return out


def apply_recorded(conn: Connection, recorded: Mapping[str, int], now: datetime) -> int:
    """Apply (and remove) the kept receipts of these just-recorded ``{api id: recipient id}``.

    A receipt applies only if its recipient's row holds that API ID now; how many applied.
    """
    entries: list[Any] = []
    for part in _slices(sorted(recorded)):
        entries.extend(conn.execute(_BY_API, {"b_apis": part}))
    if not entries:
        return 0
    entries.sort(key=lambda e: e.id)
    wanted = sorted({recorded[e.api_message_id] for e in entries})
    rows: dict[int, dict[str, Any]] = {}
    for part in _slices(wanted):
        for row in load_rows(conn, _r.id.in_(part)):
            rows[row["id"]] = row
    items: list[tuple[int, DeliveryReport]] = []
    done: list[int] = []
    for e in entries:
        rid = recorded[e.api_message_id]
        found = rows.get(rid)
        if found is None or found["api_message_id"] != e.api_message_id:
            continue
        items.append((rid, _report(e)))
        done.append(e.id)
    apply_to_rows(conn, items, rows, now)
    for part in _slices(done):
        conn.execute(delete(receipt_inbox).where(_i.id.in_(part)))
    return len(done)


@contextmanager
def applied_on_record(
    conn: Connection, outcomes: Sequence[Outcome], accepted: Sequence[SentOutcomes]
) -> Iterator[None]:
    """Around the writes of outcomes (``Store.record``, ``requests.finish_chunks``): then apply
    the receipts kept for the IDs just recorded, in the same transaction.

    One indexed probe of an (almost always) empty table when nothing is kept.
    """
    yield
    if conn.execute(_ANY).first() is None:
        return
    recorded: dict[str, int] = {}
    for o in outcomes:
        if o.api_message_id:
            recorded[o.api_message_id[:API_MESSAGE_ID_LENGTH]] = o.recipient_id
    for chunk in accepted:
        if chunk.length:
            for rid, api in json.loads(chunk.packed).items():
                if api:
                    recorded[str(api)[:API_MESSAGE_ID_LENGTH]] = int(rid)
    if recorded:
        apply_recorded(conn, recorded, _now())


def due(conn: Connection, now: datetime) -> list[tuple[int, str]]:
    """(inbox id, api id) of kept receipts whose time to be looked for has come."""
    stmt = (
        select(_i.id, _i.api_message_id)
        .where(_i.sweep_at.is_not(None), _i.sweep_at <= now)
        .order_by(_i.sweep_at)
        .limit(SWEEP_BATCH)
    )
    return [(int(i), str(a)) for i, a in conn.execute(stmt)]


def recorded_ids(conn: Connection, apis: Sequence[str]) -> dict[str, int]:
    """``{api id: recipient id}`` of the rows holding these IDs: a scan, for a read connection."""
    found: dict[str, int] = {}
    for part in _slices(sorted(set(apis))):
        stmt = select(_r.api_message_id, _r.id).where(_r.api_message_id.in_(part)).order_by(_r.id)
        for api, rid in conn.execute(stmt):
            found.setdefault(str(api), int(rid))
    return found


def swept(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    """Note that these were looked for: once more a minute after arrival, then never."""
    later = now - timedelta(seconds=SWEEP_DELAYS[1])
    for part in _slices(list(ids)):
        conn.execute(
            update(receipt_inbox)
            .where(_i.id.in_(part), _i.received_at > later)
            .values(sweep_at=now + timedelta(seconds=SWEEP_DELAYS[1]))
        )
        conn.execute(
            update(receipt_inbox)
            .where(_i.id.in_(part), _i.received_at <= later)
            .values(sweep_at=None)
        )


def prune(conn: Connection, now: datetime) -> int:
    """Drop receipts kept longer than :data:`RETENTION`; how many."""
    result = conn.execute(delete(receipt_inbox).where(_i.received_at < now - RETENTION))
    return int(result.rowcount or 0)


def _report(entry: Any) -> DeliveryReport:
    return DeliveryReport(
        status=entry.status,
        api_message_id=entry.api_message_id,
        client_message_id=entry.client_message_id,
        to=entry.msisdn,
        status_at=entry.status_at,
        charge=float(entry.charge) if entry.charge is not None else None,
        source=entry.source,
    )
