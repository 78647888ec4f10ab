"""Many workers on one campaign: heartbeats, settling others' orphans, finishing together.

Any number of runs of one campaign, in processes on any machines sharing a PostgreSQL or
MariaDB store, share its work (DESIGN.md §7): each renews a lease on its claims (a heartbeat)
and settles the rows of workers whose lease lapsed, and none finishes while another live worker
still has rows in flight, so every process ends with the same counts.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from batch_sender.gateway import GatewayClient
from batch_sender.send import leases, settle
from batch_sender.send.coordinator import Sender, SendProgress, SendStats
from batch_sender.states import Status
from batch_sender.store import Census, Store

__all__ = ["DEFAULT_LEASE", "FINISH_MARGIN", "Heartbeat", "finish", "settle_orphans"]

log = logging.getLogger(__name__)

DEFAULT_LEASE = 300.0  # seconds a claim stays a live worker's without a heartbeat
HEARTBEATS_PER_LEASE = 3  # heartbeats per lease: two may be missed before others settle the rows
FINISH_POLL = 0.5  # seconds between looks at other workers' in-flight rows at the end of a run
FINISH_MARGIN = 30.0  # seconds added to 2 leases: settling takes a while (grace, querymsg)

_settling = threading.Lock()  # one settle at a time in this process (the store lock is per session)


def settle_orphans(
    store: Store,
    client: GatewayClient,
    campaign_id: int,
    lease: float,
    *,
    statuses: tuple[Status, ...] = (Status.SENDING,),
    max_processing: float = settle.DEFAULT_MAX_PROCESSING,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Settle the rows of dead workers, unless another worker is doing it right now.

    One settler at a time: two settlers could both hear "never accepted" for one request, and
    the second would hand back to the queue rows the first had requeued and a worker re-claimed.
    """
    if not _settling.acquire(blocking=False):
        return
    try:
        with store.exclusive(f"batch_sender.send.settle.{campaign_id}") as held:
            if held:
                settle.settle(
                    store,
                    client,
                    campaign_id,
                    statuses=statuses,
                    lease=lease,
                    max_processing=max_processing,
                    sleep=sleep,
                )
    finally:
        _settling.release()


def finish(
    store: Store,
    client: GatewayClient,
    sender: Sender,
    stats: SendStats,
    campaign_id: int,
    *,
    stop: threading.Event,
    lease: float,
    finish_wait: float,
    max_processing: float = settle.DEFAULT_MAX_PROCESSING,
) -> tuple[SendStats, Census | None]:
    """Stay until every row of the campaign is final, when other workers still have some.

    A worker whose claims find nothing left waits for the others' in-flight rows; sends what
    they hand back (or what settling their orphans requeues); settles orphans whose lease
    lapsed. It gives up when nothing has changed for ``finish_wait`` seconds (the summary then
    shows the rows still ``sending``), and never waits on rows it cannot send and nobody holds.
    With the stats goes the census that found every row final, if one did: the summary's.
    """
    progress = stats.progress
    last: tuple[int, int] | None = None
    changed = time.monotonic()
    unclaimable: int | None = None  # pending rows our last claim could not get, none sending
    while stats.stop is None and not stats.interrupted:
        census = store.census(campaign_id)
        pending, sending = census.counts[Status.PENDING], census.counts[Status.SENDING]
        if not pending and not sending:
            return stats, census
        if (pending, sending) != last:
            last, changed = (pending, sending), time.monotonic()
        elif time.monotonic() - changed > finish_wait:
            log.warning(
                "giving up waiting for other workers: %d rows still sending, %d pending",
                sending,
                pending,
            )
            break
        if pending:
            more = sender.run()
            progress = _added(progress, more.progress)
            stats = dataclasses.replace(more, progress=progress)
            if more.progress.requests:
                unclaimable = None
                continue
            if not sending:
                # Nothing in flight anywhere, and what is pending is not ours to send now (a
                # send window) — or it is locked by another worker's claim that has not
                # committed yet (SKIP LOCKED passes over it, a count still says pending). Look
                # once more a poll later before leaving it to others.
                if unclaimable == pending:
                    break
                unclaimable = pending
        if sending:
            log.debug("waiting for %d rows other workers have in flight", sending)
            settle_orphans(
                store, client, campaign_id, lease, max_processing=max_processing, sleep=stop.wait
            )
        if stop.wait(FINISH_POLL):
            stats = dataclasses.replace(stats, interrupted=stats.stop is None)
    return stats, None


def _added(a: SendProgress, b: SendProgress) -> SendProgress:
    return SendProgress(
        sent=a.sent + b.sent,
        failed=a.failed + b.failed,
        unknown=a.unknown + b.unknown,
        requests=a.requests + b.requests,
        retries=a.retries + b.retries,
        started=a.started,
    )


class Heartbeat:
    """Two threads while the worker sends: one renews its lease, one settles others' orphans.

    Apart, because settling may take a while (it waits for a dead worker's last requests to
    land, then asks the gateway about each), and the lease must not lapse meanwhile.
    """

    def __init__(
        self,
        store: Store,
        client: GatewayClient,
        campaign_id: int,
        worker: str,
        *,
        lease: float,
        max_processing: float = settle.DEFAULT_MAX_PROCESSING,
    ) -> None:
        self._store = store
        self._max_processing = max_processing
        self._client = client
        self._campaign_id = campaign_id
        self._worker = worker
        self._lease = lease
        self._interval = lease / HEARTBEATS_PER_LEASE
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._beat, name="batch-sender-heartbeat", daemon=True),
            threading.Thread(target=self._settle, name="batch-sender-settle", daemon=True),
        ]

    def __enter__(self) -> Heartbeat:
        leases.renewed(self._worker)  # the claims to come are stamped now
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()
        leases.forget(self._worker)

    def _beat(self) -> None:
        while not self._done.wait(self._interval):
            try:
                touched = self._store.touch_claims(self._campaign_id, self._worker)
                leases.renewed(self._worker)
                log.debug("heartbeat: lease renewed on %d rows", touched)
            except Exception as exc:  # keep beating: a missed beat only shortens the lease
                log.warning("heartbeat failed: %s", exc)

    def _settle(self) -> None:
        while not self._done.wait(self._interval):
            try:
                settle_orphans(
                    self._store,
                    self._client,
                    self._campaign_id,
                    self._lease,
                    max_processing=self._max_processing,
                    sleep=self._done.wait,
                )
            except Exception as exc:  # the end of the run settles again
                log.warning("settling other workers' requests failed: %s", exc)
