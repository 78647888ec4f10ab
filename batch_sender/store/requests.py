"""Store queries about requests (one ``climsgid`` each) rather than rows: when a request's rows
were last written, and a chunk's whole outcome in one transaction.

Functions over a :class:`~batch_sender.store.Store` (its engine), kept apart from the queue's
hot path in ``queries``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, case, func, or_, select, update

from batch_sender.states import Status
from batch_sender.store import engine as engines
from batch_sender.store import inbox
from batch_sender.store.facade import Store
from batch_sender.store.records import Outcome, SentOutcomes
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    ERROR_CODE_LENGTH,
    ERROR_DESCRIPTION_LENGTH,
    recipients,
)

__all__ = ["finish_chunks", "last_written"]

_r = recipients.c
_ID_BATCH = 1000  # ids per "WHERE id IN (…)"


def last_written(store: Store, campaign_id: int, statuses: Sequence[Status]) -> dict[str, datetime]:
    """Each request's (``climsgid``'s) latest ``updated_at`` over its rows in ``statuses``.

    For an ``unknown`` row this is when its courier gave up on the answer: its request left
    before then, so that is the latest moment it can have reached the gateway.
    """
    stmt = (
        select(_r.client_message_id, func.max(_r.updated_at))
        .where(_r.campaign_id == campaign_id, _r.status.in_([s.value for s in statuses]))
        .group_by(_r.client_message_id)
    )
    with store.engine.connect() as conn, engines.store_errors("reading requests", store.engine.url):
        rows = conn.execute(stmt).all()
    out = {}
    for climsgid, written in rows:
        if climsgid is not None and written is not None:
            out[climsgid] = written if written.tzinfo else written.replace(tzinfo=UTC)
    return out


def finish_chunks(
    store: Store,
    outcomes: Sequence[Outcome],
    *,
    accepted: Sequence[SentOutcomes] = (),
    release: Sequence[int] = (),
) -> None:
    """Record outcomes and give never-accepted rows back to the queue in ONE transaction.

    Two transactions would let a crash between them leave released rows ``sending`` under a
    ``climsgid`` the gateway knows (other numbers of the request were accepted), which settling
    must then call ``unknown``. Only rows still ``sending`` or ``unknown`` change, as in
    ``Store.record``. (The common case, nothing to release, stays on ``Store.record``'s path.)
    """
    rows = [*outcomes, *itertools.chain.from_iterable(accepted)]
    if not rows and not release:
        return
    now = datetime.now(UTC)
    live = [Status.SENDING.value, Status.UNKNOWN.value]
    with (
        engines.store_errors("recording outcomes", store.engine.url),
        engines.begin_write(store.engine) as conn,
        inbox.applied_on_record(conn, outcomes, accepted),  # receipts that came first
    ):
        if rows:
            conn.execute(
                update(recipients)
                .where(
                    _r.id == bindparam("b_id"),
                    or_(_r.status == live[0], _r.status == live[1]),  # executemany: no IN
                )
                .values(
                    status=bindparam("b_status"),
                    api_message_id=bindparam("b_api"),
                    error_code=bindparam("b_code"),
                    error_description=bindparam("b_why"),
                    updated_at=now,
                ),
                [
                    {
                        "b_id": o.recipient_id,
                        "b_status": o.status.value,
                        "b_api": o.api_message_id and o.api_message_id[:API_MESSAGE_ID_LENGTH],
                        "b_code": o.error_code and o.error_code[:ERROR_CODE_LENGTH],
                        "b_why": o.error_description
                        and o.error_description[:ERROR_DESCRIPTION_LENGTH],
                    }
                    for o in rows
                ],
            )
        ids = list(release)
        for start in range(0, len(ids), _ID_BATCH):
            conn.execute(
                update(recipients)
                .where(_r.id.in_(ids[start : start + _ID_BATCH]), _r.status == Status.SENDING.value)
                .values(
                    status=Status.PENDING.value,
                    client_message_id=None,
                    claimed_by=None,
                    claimed_at=None,
                    attempts=case((_r.attempts > 0, _r.attempts - 1), else_=0),
                    updated_at=now,
                )
            )
