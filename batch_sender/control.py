"""Campaign control: list campaigns; pause, resume or cancel one through the results database.

An operator's ``pause``/``cancel`` is a row in the database (``campaigns.control``), so it reaches
every worker on every machine that shares it: each worker looks before it claims, at most every
:data:`CONTROL_POLL` seconds (:class:`ControlCheck`), and stops claiming when it sees one. The
requests it already claimed finish and are recorded as usual (a stop lets them land for a few
seconds, like Ctrl-C; any still out then stay ``sending`` and the next run settles them), so
nothing is lost. A paused campaign's rows stay ``pending``: ``resume`` lets the next run continue.
``cancel`` is final: its ``pending`` rows become ``cancelled`` at once, in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from batch_sender.errors import InputError
from batch_sender.states import CampaignControl, Status
from batch_sender.store import Campaign, Store
from batch_sender.store import control as sql

__all__ = [
    "CONTROL_POLL",
    "CampaignLine",
    "ControlCheck",
    "cancel",
    "effective_status",
    "list_campaigns",
    "pause",
    "resume",
]

CONTROL_POLL = 1.0  # seconds between a worker's looks at its campaign's control
DEFAULT_LIST_LIMIT = 20  # campaigns `batch-sender campaigns` shows, newest first


class ControlCheck:
    """Called before each claim: the campaign's control (``paused``/``cancelled``) or None.

    Reads the database at most every ``every`` seconds (a claim is a few milliseconds; one read
    per second costs nothing measurable); ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        store: Store,
        campaign_id: int,
        *,
        every: float = CONTROL_POLL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._campaign_id = campaign_id
        self._every = every
        self._clock = clock
        self._next = 0.0
        self._seen: CampaignControl | None = None

    def __call__(self) -> CampaignControl | None:
        now = self._clock()
        if now >= self._next:
            self._next = now + self._every
            self._seen = sql.control_of(self._store, self._campaign_id)
        return self._seen


def effective_status(campaign: Campaign) -> str:
    """What an operator sees: the control when one is set, else what the last run wrote."""
    return campaign.control or campaign.status


@dataclass(frozen=True, slots=True)
class CampaignLine:
    """One campaign as ``batch-sender campaigns`` shows it."""

    name: str
    status: str  # effective_status
    total: int
    counts: dict[str, int]  # rows per state, states with rows only
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    control_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "name": self.name,
            "status": self.status,
            "recipients": self.total,
            "counts": dict(self.counts),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "control_at": iso(self.control_at),
        }


def list_campaigns(store: Store, *, limit: int | None = DEFAULT_LIST_LIMIT) -> list[CampaignLine]:
    """The newest ``limit`` campaigns (None: all), newest first, with their counts."""
    chosen = store.campaigns()[::-1]
    if limit is not None:
        chosen = chosen[:limit]
    counts = sql.counts_of(store, [c.id for c in chosen])
    return [
        CampaignLine(
            name=c.name,
            status=effective_status(c),
            total=c.total,
            counts={str(s): n for s, n in sorted(counts[c.id].items(), key=_state_order)},
            created_at=c.created_at,
            started_at=c.started_at,
            finished_at=c.finished_at,
            control_at=c.control_at,
        )
        for c in chosen
    ]


_ORDER = {status: i for i, status in enumerate(Status)}


def _state_order(item: tuple[Status, int]) -> int:
    return _ORDER[item[0]]


def _campaign(store: Store, name: str) -> Campaign:
    found = store.campaign(name)
    if found is None:
        raise InputError(f"no campaign named {name!r} (see `batch-sender campaigns`)")
    return found


def _left(store: Store, campaign: Campaign) -> tuple[int, int]:
    """(pending, sending) rows of a campaign."""
    counts = store.counts(campaign.id)
    return counts.get(Status.PENDING, 0), counts.get(Status.SENDING, 0)


def pause(store: Store, name: str) -> str:
    """Pause a campaign: workers stop claiming within seconds; its rows stay ``pending``.

    Returns what happened, one line. A cancelled campaign cannot be paused (InputError).
    """
    campaign = _campaign(store, name)
    if campaign.control == CampaignControl.CANCELLED:
        raise InputError(f"campaign {name!r} was cancelled: there is nothing to pause")
    if campaign.control == CampaignControl.PAUSED:
        return f"campaign {name!r} is already paused"
    pending, sending = _left(store, campaign)
    if not pending and not sending:
        return f"campaign {name!r} has nothing left to send: not paused"
    sql.set_control(store, campaign.id, CampaignControl.PAUSED)
    return (
        f"paused campaign {name!r}: {pending} recipients stay pending; workers stop claiming "
        f"within seconds and finish the requests in flight; `batch-sender resume {name}` "
        "to continue"
    )


def resume(store: Store, name: str) -> str:
    """Lift a pause: the next run of the campaign continues it."""
    campaign = _campaign(store, name)
    if campaign.control == CampaignControl.CANCELLED:
        raise InputError(f"campaign {name!r} was cancelled: it cannot be resumed")
    if campaign.control != CampaignControl.PAUSED:
        return f"campaign {name!r} is not paused"
    sql.set_control(store, campaign.id, None)
    pending, _ = _left(store, campaign)
    return f"resumed campaign {name!r}: the next run sends its {pending} pending recipients"


def cancel(store: Store, name: str) -> str:
    """Cancel a campaign for good: its pending rows become ``cancelled`` now; requests in flight
    finish and are recorded."""
    campaign = _campaign(store, name)
    if campaign.control == CampaignControl.CANCELLED:
        return f"campaign {name!r} is already cancelled"
    cancelled = sql.cancel(store, campaign.id)
    _, sending = _left(store, campaign)
    tail = f"; {sending} in flight finish and are recorded" if sending else ""
    return f"cancelled campaign {name!r}: {cancelled} recipients will not be sent{tail}"
