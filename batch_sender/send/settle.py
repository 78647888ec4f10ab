"""Settle recipients whose request's answer was never read, by asking the gateway (``querymsg``).

Rows stay ``sending`` when a process dies between claiming them and recording the answer, and
become ``unknown`` when the answer was lost. Every request carries a unique ``climsgid``, so the
gateway can tell: ERR 104 (unknown client message ID) means it never accepted the request, and
the rows go back to ``pending`` to be sent; an answer means it reached the gateway. A
one-number request is then ``sent`` with its API message ID. A multi-number request's rows stay
``unknown`` with a reason: ``querymsg`` answers for one message of the request only, so it cannot
say which numbers were accepted (some may have been refused, or credit may have run out mid-list),
and a row is ``sent`` only with the gateway's word for that number. Anything else leaves them
``unknown``.

ERR 104 is only trusted once the request cannot still be on its way: before asking about orphans
of a recently dead process the settler waits ``grace`` seconds, so a request written just before
a ``kill -9`` has been handled (or dropped) by the gateway by the time we ask.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batch_sender.errors import GatewayError, RequestRejected, RunStopped
from batch_sender.gateway import GatewayClient, wire
from batch_sender.gateway import Status as GatewayStatus
from batch_sender.send import policy
from batch_sender.send.leases import is_orphan
from batch_sender.states import Status
from batch_sender.store import Outcome, Store

__all__ = ["SettleStats", "settle"]

log = logging.getLogger(__name__)

NEVER_ACCEPTED = "104"  # querymsg: unknown client message ID
SETTLE_GRACE = 2.0  # seconds: how long a request written by a dead process may still be in flight
RECENT = 600.0  # seconds: orphans claimed more recently than this get the grace wait
QUERY_ATTEMPTS = 3  # tries of one querymsg on retryable errors


@dataclass(slots=True)
class SettleStats:
    requests: int = 0  # climsgids asked about
    sent: int = 0  # rows the gateway had accepted
    requeued: int = 0  # rows it never saw: back to pending
    unknown: int = 0  # rows still unknown


def settle(
    store: Store,
    client: GatewayClient,
    campaign_id: int,
    *,
    statuses: tuple[Status, ...] = (Status.SENDING,),
    lease: float = 300.0,
    grace: float = SETTLE_GRACE,
    sleep: Callable[[float], object] = time.sleep,
) -> SettleStats:
    """Ask the gateway about every orphaned request of the campaign and record what it says."""
    stats = SettleStats()
    groups = [
        g
        for g in store.in_flight(campaign_id, statuses=statuses)
        if g.status is not Status.SENDING or is_orphan(g.claimed_by, g.claimed_at, lease=lease)
    ]  # a `sending` row whose claimer is alive is still in its hands
    if grace > 0 and any(g.status is Status.SENDING and _recent(g.claimed_at) for g in groups):
        log.info("waiting %.0fs for requests of a stopped process to land before asking", grace)
        sleep(grace)
    for group in groups:
        stats.requests += 1
        ids = [r.id for r in group.recipients]
        try:
            found = _querymsg(client, group.client_message_id)
        except RequestRejected as exc:
            if exc.code == NEVER_ACCEPTED:
                store.release(ids, from_statuses=statuses)
                stats.requeued += len(ids)
                continue
            store.record(_unknown(ids, str(exc)))
            stats.unknown += len(ids)
            continue
        except RunStopped:
            raise
        except GatewayError as exc:
            log.warning("could not settle request %s: %s", group.client_message_id, exc)
            if group.status is Status.SENDING:
                store.record(_unknown(ids, f"could not settle: {exc}"))
            stats.unknown += len(ids)
            continue
        size = store.request_size(campaign_id, group.client_message_id)
        if size == 1 and len(ids) == 1 and wire.is_message_id(found.api_message_id):
            # a one-number request: querymsg's answer is that number's own word
            store.record([Outcome(ids[0], Status.SENT, api_message_id=found.api_message_id)])
            stats.sent += 1
            continue
        # querymsg by climsgid answers for one message of the request only: it proves that the
        # request reached the gateway, not that this number was accepted (it may have been
        # refused with 105/121, or credit may have run out mid-list), nor which ID is its own.
        why = (
            f"request {group.client_message_id} of {size} numbers reached the gateway "
            "(querymsg), which does not say whether this number was accepted: check it "
            "before --resend-unknown"
        )
        store.record(_unknown(ids, why))
        stats.unknown += len(ids)
    if stats.requests:
        log.info(
            "settled %d earlier requests: %d sent, %d back to pending, %d unknown",
            stats.requests,
            stats.sent,
            stats.requeued,
            stats.unknown,
        )
    return stats


def _recent(claimed_at: datetime | None) -> bool:
    if claimed_at is None:
        return True
    if claimed_at.tzinfo is None:
        claimed_at = claimed_at.replace(tzinfo=UTC)
    return datetime.now(UTC) - claimed_at < timedelta(seconds=RECENT)


def _querymsg(client: GatewayClient, climsgid: str) -> GatewayStatus:
    """``querymsg`` by client message ID, retried like a send when it provably did not happen."""
    for attempt in policy.policy(max_attempts=QUERY_ATTEMPTS, stop_event=threading.Event()):
        with attempt:
            return client.querymsg(climsgid=climsgid)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


def _unknown(ids: list[int], why: str) -> list[Outcome]:
    return [Outcome(rid, Status.UNKNOWN, error_description=why[:255]) for rid in ids]
