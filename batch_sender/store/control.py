"""SQL for campaign control: pause, resume, cancel, and the list of campaigns with their counts.

An operator's control lives in ``campaigns.control`` (revision 0009), apart from the status that
runs write. Workers read it before they claim (:func:`control_of`); ``cancel`` also turns every
``pending`` row into ``cancelled`` in the same transaction, so no worker can claim them after it
commits, whether or not it has looked yet. Every SQLAlchemy error leaves as ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Update, func, literal, select, update

from batch_sender.states import CampaignControl, Status
from batch_sender.store import engine as engines
from batch_sender.store.facade import Store
from batch_sender.store.tables import UTCDateTime, campaigns, recipients

__all__ = [
    "cancel",
    "cancel_pending",
    "control_of",
    "counts_of",
    "set_control",
]

CANCEL_REASON = "campaign cancelled"  # error_description of a cancelled row

_r = recipients.c
_c = campaigns.c
_NOT_CANCELLED = (_c.control != CampaignControl.CANCELLED.value) | _c.control.is_(None)


def _now() -> datetime:
    return datetime.now(UTC)


def control_of(store: Store, campaign_id: int) -> CampaignControl | None:
    """The campaign's control now: None, ``paused`` or ``cancelled`` (one primary-key read)."""
    with engines.store_errors("reading a campaign", store.engine.url), store.engine.connect() as c:
        value = c.execute(select(_c.control).where(_c.id == campaign_id)).scalar()
    return None if value is None else CampaignControl(value)


def set_control(store: Store, campaign_id: int, control: CampaignControl | None) -> None:
    """Pause (``paused``) or resume (None) a campaign; never undoes a cancel."""
    stmt = (
        update(campaigns)
        .where(_c.id == campaign_id, _NOT_CANCELLED)
        .values(
            control=None if control is None else control.value,
            control_at=literal(_now(), UTCDateTime()),
        )
    )
    with (
        engines.store_errors("updating a campaign", store.engine.url),
        engines.begin_write(store.engine) as conn,
    ):
        conn.execute(stmt)


def cancel(store: Store, campaign_id: int) -> int:
    """Mark the campaign cancelled and its ``pending`` rows ``cancelled``, in one transaction;
    how many rows. Rows in flight (``sending``) keep their request's outcome."""
    now = literal(_now(), UTCDateTime())
    with (
        engines.store_errors("cancelling a campaign", store.engine.url),
        engines.begin_write(store.engine) as conn,
    ):
        conn.execute(
            update(campaigns)
            .where(_c.id == campaign_id, _NOT_CANCELLED)
            .values(control=CampaignControl.CANCELLED.value, control_at=now)
        )
        return int(conn.execute(_cancel_pending(campaign_id, now)).rowcount)


def cancel_pending(store: Store, campaign_id: int) -> int:
    """Cancel rows of a cancelled campaign that came back to ``pending`` since (a request that
    was stopped before it left, an orphan settled as never accepted); how many."""
    with (
        engines.store_errors("cancelling recipients", store.engine.url),
        engines.begin_write(store.engine) as conn,
    ):
        return int(
            conn.execute(_cancel_pending(campaign_id, literal(_now(), UTCDateTime()))).rowcount
        )


def _cancel_pending(campaign_id: int, now: Any) -> Update:
    return (
        update(recipients)
        .where(_r.campaign_id == campaign_id, _r.status == Status.PENDING.value)
        .values(status=Status.CANCELLED.value, error_description=CANCEL_REASON, updated_at=now)
    )


def counts_of(store: Store, campaign_ids: Sequence[int]) -> dict[int, dict[Status, int]]:
    """Rows per state of each campaign (states with rows only), in one grouped query."""
    out: dict[int, dict[Status, int]] = {cid: {} for cid in campaign_ids}
    if not campaign_ids:
        return out
    stmt = (
        select(_r.campaign_id, _r.status, func.count())
        .where(_r.campaign_id.in_(list(campaign_ids)))
        .group_by(_r.campaign_id, _r.status)
    )
    with engines.store_errors("counting recipients", store.engine.url), store.engine.connect() as c:
        for campaign_id, status, n in c.execute(stmt):
            out[int(campaign_id)][Status(status)] = int(n)
    return out
