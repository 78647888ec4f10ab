"""Tracking without callbacks: ask ``querymsg`` about sent messages whose delivery is not final.

Polls at a bounded rate (the gateway documents callbacks as the better way; ``querymsg`` answers
for :data:`QUERY_WINDOW` after the send, so older messages are left alone) and records each
answer exactly as a callback would (:meth:`DeliveryStore.record`, source ``querymsg``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from batch_sender.errors import GatewayError, RequestRejected, RunStopped
from batch_sender.gateway import GatewayClient
from batch_sender.gateway import delivery_codes as statuses
from batch_sender.send.ratelimit import RateLimiter
from batch_sender.store.delivery import Applied, DeliveryReport, DeliveryStore

__all__ = ["DEFAULT_RATE", "QUERY_WINDOW", "TrackStats", "track"]

log = logging.getLogger(__name__)

QUERY_WINDOW = timedelta(days=6)  # how long querymsg knows a message (clickatell-api.md §4)
DEFAULT_RATE = 5.0  # querymsg requests per second
PAGE = 200  # rows read from the database at a time
RECORD_BATCH = 50  # answers recorded per transaction


@dataclass(slots=True)
class TrackStats:
    queried: int = 0  # querymsg requests made
    updated: int = 0  # rows whose delivery status moved forward
    final: int = 0  # of the rows queried, how many are final now
    not_found: int = 0  # the gateway did not know the ID (ERR 103)
    errors: int = 0  # other gateway errors, left for the next pass
    passes: int = 0


def track(
    deliveries: DeliveryStore,
    client: GatewayClient,
    campaign_id: int,
    *,
    rate: float = DEFAULT_RATE,
    until_final: bool = False,
    interval: float = 30.0,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrackStats:
    """One pass over the campaign's undecided messages (or passes until all are final).

    ``until_final`` repeats a pass every ``interval`` seconds until no message is left to ask
    about, ``timeout`` seconds pass, or ``stop`` is set. Auth/account errors propagate.
    """
    stop = stop or threading.Event()
    limiter = RateLimiter(rate)
    stats = TrackStats()
    deadline = None if timeout is None else clock() + timeout
    while True:
        left = _one_pass(deliveries, client, campaign_id, limiter, stats, stop)
        stats.passes += 1
        if not until_final or left == 0 or stop.is_set():
            break
        if deadline is not None and clock() + interval > deadline:
            break
        stop.wait(interval)
    log.info(
        "tracked campaign %d: %d queries, %d updated, %d final, %d not found, %d errors",
        campaign_id,
        stats.queried,
        stats.updated,
        stats.final,
        stats.not_found,
        stats.errors,
    )
    return stats


def _one_pass(
    deliveries: DeliveryStore,
    client: GatewayClient,
    campaign_id: int,
    limiter: RateLimiter,
    stats: TrackStats,
    stop: threading.Event,
) -> int:
    """Ask about every undecided row once; how many are still not final afterwards."""
    sent_after = datetime.now(UTC) - QUERY_WINDOW
    after_id = 0
    left = 0
    while not stop.is_set():
        page = deliveries.awaiting(
            campaign_id, sent_after=sent_after, after_id=after_id, limit=PAGE
        )
        if not page:
            break
        after_id = page[-1].recipient_id
        reports: list[DeliveryReport] = []
        for row in page:
            if stop.is_set():
                break
            limiter.acquire(1)
            stats.queried += 1
            try:
                found = client.querymsg(apimsgid=row.api_message_id)
            except RunStopped:
                raise
            except RequestRejected as exc:
                stats.not_found += exc.code == "103"
                stats.errors += exc.code != "103"
                left += 1
                continue
            except GatewayError as exc:
                log.warning("querymsg %s failed: %s", row.api_message_id, exc)
                stats.errors += 1
                left += 1
                continue
            code = statuses.normalise(found.status)
            if code is None:
                left += 1
                continue
            stats.final += statuses.is_final(code)
            left += not statuses.is_final(code)
            reports.append(
                DeliveryReport(
                    status=code,
                    api_message_id=row.api_message_id,
                    source="querymsg",
                    recipient_id=row.recipient_id,
                )
            )
            if len(reports) >= RECORD_BATCH:
                stats.updated += _record(deliveries, reports)
        stats.updated += _record(deliveries, reports)
    return left


def _record(deliveries: DeliveryStore, reports: list[DeliveryReport]) -> int:
    applied = deliveries.record(reports)
    reports.clear()
    return sum(a is Applied.UPDATED for a in applied)
