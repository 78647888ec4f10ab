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

ERR 104 is only trusted once the request can no longer land. A gateway may hold a request for a
while before it accepts it (a slow or overloaded gateway, a proxy's queue); a ``querymsg`` in
that time answers 104 although the messages are about to go out. So every request gets a latest
departure: for ``unknown`` rows, when their courier gave up on the answer (the request left
before that); for ``sending`` rows of a dead claimer, the moment it was found dead (it may have
sent until then). A 104 sends rows back to ``pending`` only once ``max_processing`` seconds
(the longest a gateway is assumed to hold a request, ``--max-processing``) and a margin have
passed since; a younger 104 is asked again after that wait, which the log states. An answer that
finds the request needs no wait: acceptance cannot be undone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batch_sender import config
from batch_sender.errors import GatewayError
from batch_sender.gateway import GatewayClient, MessageStatus, wire
from batch_sender.send import policy
from batch_sender.send.leases import is_orphan
from batch_sender.send.policy import Action
from batch_sender.states import Status
from batch_sender.store import InFlight, Outcome, Store
from batch_sender.store import requests as store_requests

__all__ = ["DEFAULT_MAX_PROCESSING", "SettleStats", "settle"]

log = logging.getLogger(__name__)

NEVER_ACCEPTED = "104"  # querymsg: unknown client message ID
#: seconds a gateway may hold a request before accepting it (or never): the default read timeout
DEFAULT_MAX_PROCESSING = config.DEFAULT_MAX_PROCESSING
SETTLE_MARGIN = 2.0  # seconds added to max_processing: clocks, the request's own transit
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
    max_processing: float = DEFAULT_MAX_PROCESSING,
    force: bool = False,
    sleep: Callable[[float], object] = time.sleep,
) -> SettleStats:
    """Ask the gateway about every orphaned request of the campaign and record what it says.

    A ``sending`` row is touched only when its claimer is gone (``leases.is_orphan``), unless
    ``force`` (``reconcile --force``: the operator says no run holds them).
    """
    stats = SettleStats()
    found_at = datetime.now(UTC)
    groups = [
        g
        for g in store.in_flight(campaign_id, statuses=statuses)
        if force
        or g.status is not Status.SENDING
        or is_orphan(g.claimed_by, g.claimed_at, lease=lease)
    ]  # a `sending` row whose claimer is alive is still in its hands
    written = (
        store_requests.last_written(store, campaign_id, (Status.UNKNOWN,))
        if any(g.status is Status.UNKNOWN for g in groups)
        else {}
    )
    window = timedelta(seconds=max_processing + SETTLE_MARGIN)

    def landed_by(group: InFlight) -> datetime:
        """When the group's request can no longer reach the gateway."""
        left = found_at  # a dead claimer may have sent it until it was found dead
        if group.status is Status.UNKNOWN:
            left = min(left, written.get(group.client_message_id, found_at))
        return left + window

    young: list[InFlight] = []
    for group in groups:
        stats.requests += 1
        if _settle_one(store, client, campaign_id, group, statuses, stats, final=False):
            continue
        young.append(group)  # 104, but it may still land
    if young:
        until = max(landed_by(g) for g in young)
        wait = (until - datetime.now(UTC)).total_seconds()
        if wait > 0:
            log.info(
                "%d requests are unknown to the gateway (ERR 104) but may still be in its hands: "
                "waiting %.0fs, until %s (%.0fs after they last left, --max-processing), before "
                "asking again",
                len(young),
                wait,
                until.strftime("%H:%M:%S"),
                max_processing,
            )
            sleep(wait)
        if datetime.now(UTC) < until:  # woken early (the run is ending): ask another time
            log.info("stopped waiting: %d requests stay as they are", len(young))
            young = []
        for group in young:
            _settle_one(store, client, campaign_id, group, statuses, stats, final=True)
    if stats.requests:
        log.info(
            "settled %d earlier requests: %d sent, %d back to pending, %d unknown",
            stats.requests,
            stats.sent,
            stats.requeued,
            stats.unknown,
        )
    return stats


def _settle_one(
    store: Store,
    client: GatewayClient,
    campaign_id: int,
    group: InFlight,
    statuses: tuple[Status, ...],
    stats: SettleStats,
    *,
    final: bool,
) -> bool:
    """Ask about one request and record the answer; False for a 104 when not ``final``."""
    ids = [r.id for r in group.recipients]
    try:
        found = _querymsg(client, group.client_message_id)
    except GatewayError as exc:
        # what querymsg's failure means, by the one rule (policy.decide): a refusal is the
        # gateway's answer about the request (ERR 104: it never took it); a stop stops the run;
        # anything else (retries spent, a lost answer) leaves the rows as unsettled as they were
        match policy.decide(exc).action:
            case Action.STOP:
                raise
            case Action.FAIL if getattr(exc, "code", None) == NEVER_ACCEPTED:
                if not final:
                    return False
                store.release(ids, from_statuses=statuses)
                stats.requeued += len(ids)
            case Action.FAIL:
                store.record(_unknown(ids, str(exc)))
                stats.unknown += len(ids)
            case _:
                log.warning("could not settle request %s: %s", group.client_message_id, exc)
                if group.status is Status.SENDING:
                    store.record(_unknown(ids, f"could not settle: {exc}"))
                stats.unknown += len(ids)
        return True
    size = store.request_size(campaign_id, group.client_message_id)
    if size == 1 and len(ids) == 1 and wire.is_message_id(found.api_message_id):
        # a one-number request: querymsg's answer is that number's own word
        store.record([Outcome(ids[0], Status.SENT, api_message_id=found.api_message_id)])
        stats.sent += 1
        return True
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
    return True


def _querymsg(client: GatewayClient, climsgid: str) -> MessageStatus:
    """``querymsg`` by client message ID, retried like a send when it provably did not happen."""
    for attempt in policy.policy(max_attempts=QUERY_ATTEMPTS, stop_event=threading.Event()):
        with attempt:
            return client.querymsg(climsgid=climsgid)
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


def _unknown(ids: list[int], why: str) -> list[Outcome]:
    return [Outcome(rid, Status.UNKNOWN, error_description=why[:255]) for rid in ids]
