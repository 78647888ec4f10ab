"""Send a campaign's pending recipients: claim chunks, send them on couriers, record outcomes.

One coordinator thread owns the database: it claims chunks (``pending → sending``, committed before
the request leaves), hands them to ``concurrency`` couriers (``courier``) that share one keep-alive
gateway client, and records each chunk's outcome as it comes back. Couriers hold the sending
policy: the account-wide rate, the ERR 130 pause that holds every courier, the retry rules of
DESIGN.md §3. They run on threads of this process, or on threads of a sending process of their
own (``pool``) when the run asks for it, so that the HTTP side gets a core of its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from batch_sender.config import AUTO_THREADS, MAX_CONCURRENCY, MessageOptions
from batch_sender.errors import DatabaseLost, GatewayError, OutcomeUnknown, RunStopped, StoreError
from batch_sender.gateway import GatewayClient
from batch_sender.send import leases
from batch_sender.send.adaptive import AUTO, AimdSettings, limit_for
from batch_sender.send.aio import LoopCouriers
from batch_sender.send.backlog import DEFAULT_DB_RETRY, Backlog, Batch
from batch_sender.send.courier import ChunkResult, Courier, all_outcomes, outcomes_for
from batch_sender.send.exposure import Exposure, verdict
from batch_sender.send.pool import (
    CourierPool,
    CourierSpec,
    ProcessCouriers,
    SendingProcessError,
    ThreadCouriers,
)
from batch_sender.send.ratelimit import RateLimiter
from batch_sender.states import Status
from batch_sender.store import Chunk, SentOutcomes, Store
from batch_sender.store.journal import Journal

__all__ = [
    "ChunkResult",
    "SendProgress",
    "SendStats",
    "Sender",
    "claim_scale",
    "outcomes_for",
]

log = logging.getLogger(__name__)

QUEUE_DEPTH = 2  # chunks claimed ahead per courier, so couriers never wait for the coordinator
#: the same for a sending process: the pipe and the unpickling add to each chunk's trip, and a
#: deeper queue keeps its threads busy (measured on 300k recipients: send phase -4%, two pairs)
PROCESS_QUEUE_DEPTH = 4
#: at most this many times more chunks claimed per transaction (and held ahead) when chunks are
#: smaller than the request size: see :func:`claim_scale`
MAX_CLAIM_SCALE = 4
#: ... and never beyond this many chunks claimed ahead: a crash leaves each one-recipient request
#: to settle with its own querymsg, so at high concurrency (where every claim is large already)
#: the queue stays as deep as it was
MAX_SCALED_AHEAD = 256
POLL_INTERVAL = 0.5  # seconds the coordinator waits for a finished chunk before looking around
#: finished chunks are recorded together, in one transaction, once this many have come back or
#: the first of them has waited RECORD_DELAY: one-recipient chunks (distinct texts) otherwise
#: cost a recording transaction per request, a round trip and a commit each on a server database
RECORD_DELAY = 0.05  # seconds
#: seconds a stopping run waits for requests already sent; after it, their rows stay `sending`
#: (owned by a process about to exit) and the next run settles them with querymsg
STOP_GRACE = 5.0


def new_client_message_id() -> str:
    """A unique ``climsgid`` for one request: 32 hex digits (the API allows 32 alphanumerics).

    The microsecond clock, then 72 random bits: IDs made later sort later, so the claims add
    them at the end of the (campaign_id, client_message_id) index instead of at random places
    in it (raw sqlite3, 300k recipients claimed and recorded: 13.5 → 11.7 µs each).
    """
    return f"{time.time_ns() // 1000:014x}{os.urandom(9).hex()}"


@dataclass(slots=True)
class SendProgress:
    """Counts since the run started, for the progress bar and log lines."""

    sent: int = 0
    failed: int = 0
    unknown: int = 0
    requests: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.unknown


@dataclass(slots=True)
class SendStats:
    """The end of one send: totals and, if the run was cut short, why."""

    progress: SendProgress
    stop: GatewayError | None = None
    interrupted: bool = False
    abandoned: int = 0  # recipients left `sending`: their request outlived STOP_GRACE
    halted: str | None = None  # an operator's control that stopped the claims (control.py)
    #: the results database failed for longer than --db-retry: what was held is in its journal
    database: DatabaseLost | None = None


def claim_scale(chunks: Sequence[Chunk], size: int, *, ahead: int, rate_limited: bool) -> int:
    """How many times a courier's worth of chunks the next claim takes (and the queue holds).

    A claim is one transaction whatever it holds. With one recipient per chunk (distinct texts:
    one request per recipient) claiming a courier's worth at a time made claims a third of the
    coordinator's time (py-spy, e2e_unique). So when the last claim's chunks were smaller than
    the request size ``size``, claim more of them, as many times more as they were smaller, up to
    :data:`MAX_CLAIM_SCALE`: the recipients claimed ahead stay within what full chunks hold
    (couriers x depth x ``size``), which is what a crash can leave ``sending``; and the chunks
    claimed ahead (``ahead`` at scale 1) within :data:`MAX_SCALED_AHEAD`. Chunks shrunk by a
    lost answer (``size`` 1) change nothing, and neither does a campaign under ``--rate``: there
    the queue would hold seconds of sending, claimed long before it leaves.
    """
    if rate_limited or not chunks:
        return 1
    recipients = sum(len(chunk.recipients) for chunk in chunks)
    deeper = max(1, MAX_SCALED_AHEAD // max(ahead, 1))
    return max(1, min(MAX_CLAIM_SCALE, deeper, size * len(chunks) // recipients))


class Sender:
    """Send every pending recipient of one campaign, then return :class:`SendStats`."""

    def __init__(
        self,
        *,
        store: Store,
        client: GatewayClient,
        campaign_id: int,
        options: MessageOptions,
        chunk_size: int,
        concurrency: int | str,
        limiter: RateLimiter,
        max_attempts: int,
        max_wait: float,
        stop: threading.Event,
        worker: str | None = None,
        progress: Callable[[SendProgress], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        backoff_scale: float = 1.0,
        process: CourierSpec | None = None,
        lease: float | None = None,
        halt: Callable[[], str | None] | None = None,
        db_retry: float = DEFAULT_DB_RETRY,
    ) -> None:
        """``process``: send from a child process built to this spec (``pool``) instead of
        threads sharing ``client`` and ``limiter``; if it cannot start, threads are used.
        ``lease``: the seconds a heartbeat (``scaleout.Heartbeat``) keeps this worker's claims;
        the run stops sending when it could not renew them for most of that (``_fence``).
        ``halt``: asked before each claim; an answer (an operator's ``paused``/``cancelled``)
        stops the run as a signal does, but it is not an interruption (``SendStats.halted``).
        ``db_retry``: seconds to keep retrying a failing results database (``backlog``)."""
        self._lease = lease
        self._store = store
        self._campaign_id = campaign_id
        #: the request size to claim: --chunk-size, one after a lost answer (``exposure``)
        self._exposure = Exposure(chunk_size)
        #: requests in flight: fixed, or "auto" (``adaptive``); the pool says how many it
        #: allows now (``CourierPool.capacity``), this is the figure before it starts
        self._concurrency_setting = concurrency
        self._concurrency = AimdSettings().start if concurrency == AUTO else int(concurrency)
        self._client = client
        self._limiter = limiter
        self._stop = stop
        self._worker = worker or leases.worker_id()
        self._progress_cb = progress
        self._process = process
        self._options = options
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._backoff_scale = backoff_scale
        self._sleep = sleep  # a test's recorder: couriers on threads, which call it
        self._courier = Courier(
            client=client,
            options=options,
            limiter=limiter,
            max_attempts=max_attempts,
            max_wait=max_wait,
            stop=stop,
            sleep=sleep,
            backoff_scale=backoff_scale,
        )
        self._fatal: GatewayError | None = None
        self._orphan_rows = 0  # rows left `sending` by a sending process that died
        self._halt = halt
        self._halted: str | None = None
        self._early: ProcessCouriers | None = None  # launched by start_early, not yet used
        url = store.engine.url.render_as_string(hide_password=False)
        self._backlog = Backlog(store, Journal(url, campaign_id, self._worker), retry_for=db_retry)
        self._lost: DatabaseLost | None = None

    def start_early(self) -> None:
        """Launch the sending process now, if there is to be one, without waiting for it: its
        start-up (about half a second) then overlaps what the run does before its first claim.
        :meth:`run` uses it; :meth:`close` ends it if :meth:`run` never does."""
        if self._process is not None and self._early is None:
            try:
                self._early = ProcessCouriers(self._process, wait=False)
            except SendingProcessError as exc:
                log.warning("%s: sending from this process's threads instead", exc)
                self._process = None

    def close(self) -> None:
        """End a sending process launched by :meth:`start_early` that :meth:`run` did not use."""
        if self._early is not None:
            early, self._early = self._early, None
            early.discard()

    def _start_couriers(self) -> CourierPool:
        if self._process is not None:
            try:
                if self._early is None:
                    return ProcessCouriers(self._process)
                early, self._early = self._early, None
                early.wait_ready()
                return early
            except SendingProcessError as exc:
                log.warning("%s: sending from this process's threads instead", exc)
                self._process = None
        if self._client.spec() is not None and self._sleep is None:  # on an event loop
            c = self._courier
            return LoopCouriers(
                client=self._client,
                limit=limit_for(self._concurrency_setting),
                options=self._options,
                limiter=self._limiter,
                max_attempts=self._max_attempts,
                max_wait=self._max_wait,
                stop=c.stop,
                backoff_scale=self._backoff_scale,
                max_connections=MAX_CONCURRENCY,
            )
        threads = AUTO_THREADS if self._concurrency_setting == AUTO else self._concurrency
        return ThreadCouriers(threads, self._courier)  # a test's transport: threads

    # --- coordinator -------------------------------------------------------------------------

    def run(self) -> SendStats:
        progress = SendProgress()
        in_flight: dict[Future[ChunkResult], Chunk] = {}
        # back from the couriers, not recorded yet (see RECORD_DELAY); their requests are over,
        # so they take no room, and a stop or the end of the run records them first
        finished: list[tuple[Chunk, Future[ChunkResult]]] = []
        finished_since = 0.0
        exhausted = False
        stopping_since: float | None = None
        abandoned = 0
        pool: CourierPool | None = None  # started at the first claim: there may be nothing to send
        depth = QUEUE_DEPTH if self._process is None else PROCESS_QUEUE_DEPTH
        scale = 1  # claim_scale of the last claim
        backlog = self._backlog
        leases.started(self._worker)
        try:
            while True:
                self._fence()
                if backlog.failing:
                    self._mend()
                capacity = pool.capacity if pool is not None else self._concurrency
                room = capacity * depth * scale - len(in_flight)
                if (
                    self._halt is not None
                    and self._halted is None
                    and not self._stop.is_set()
                    and not backlog.failing
                ):
                    # looked at on every turn (the check reads the database once a second), so
                    # that a pause also reaches couriers held by an ERR 130 wait; a database
                    # that fails here is an outage like a failed claim: hold on, do not die
                    try:
                        self._halted = self._halt()
                    except StoreError as exc:
                        backlog.failed(exc)
                    if self._halted is not None:
                        log.warning("campaign %s: no more claims", self._halted)
                        self._stop.set()  # in-flight requests land, the rest is released
                if (
                    not exhausted
                    and not self._stop.is_set()
                    and room >= capacity * scale
                    and backlog.may_claim()
                ):
                    # claim in batches, once a courier's worth of room is free: one transaction
                    # for several chunks, and never so many that claims sit idle for long
                    try:
                        chunks = self._store.claim_chunks(
                            self._campaign_id,
                            size=self._exposure.size,
                            count=room,
                            worker=self._worker,
                            new_id=new_client_message_id,
                        )
                    except StoreError as exc:
                        backlog.failed(exc)
                    else:
                        backlog.recovered()
                        exhausted = not chunks
                        if chunks:
                            scale = claim_scale(
                                chunks,
                                self._exposure.size,
                                ahead=capacity * depth,
                                rate_limited=self._limiter.rate is not None,
                            )
                            pool = pool or self._start_couriers()
                            in_flight.update(zip(pool.submit_all(chunks), chunks, strict=True))
                if not in_flight and not finished:
                    if backlog.failing and not self._stop.is_set():
                        self._stop.wait(min(POLL_INTERVAL, backlog.wait_time()))
                        continue  # wait for the database, holding what is not recorded
                    break
                timeout = POLL_INTERVAL
                if self._stop.is_set():
                    if pool is not None:
                        pool.stop()
                    now = time.monotonic()
                    stopping_since = stopping_since or now
                    left = stopping_since + STOP_GRACE - now
                    if left <= 0:
                        abandoned = sum(len(c.recipients) for c in in_flight.values())
                        log.warning(
                            "%d requests (%d recipients) still await the gateway's answer %.0fs "
                            "after the stop: leaving them 'sending'; the next run or "
                            "`batch-sender reconcile` settles them with querymsg",
                            len(in_flight),
                            abandoned,
                            STOP_GRACE,
                        )
                        break
                    timeout = min(timeout, left)
                if finished:
                    timeout = max(
                        0.0, min(timeout, finished_since + RECORD_DELAY - time.monotonic())
                    )
                done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                if done:
                    if not finished:
                        finished_since = time.monotonic()
                    for f in done:
                        chunk = in_flight.pop(f)
                        finished.append((chunk, f))
                        self._observe(chunk, f)
                if finished and (
                    len(finished) >= capacity
                    or time.monotonic() >= finished_since + RECORD_DELAY
                    or not in_flight
                    or self._stop.is_set()
                ):
                    released = self._record(finished, progress)
                    finished = []
                    exhausted = exhausted and not released
                    if self._progress_cb is not None:
                        self._progress_cb(progress)
            if finished:  # (every way out of the loop records first; this is the safety net)
                self._record(finished, progress)
        finally:
            if pool is not None:
                pool.shutdown()
            self.close()  # a sending process launched early for a run with nothing to send
            leases.stopped(self._worker)
            if backlog.held:  # a last try, then the journal keeps them
                backlog.flush(force=True)
            if self._lost is not None or backlog.held:
                self._give_up()  # (again: with the final counts)
            backlog.close()
        return SendStats(
            progress,
            stop=self._fatal,
            interrupted=(
                self._stop.is_set()
                and self._fatal is None
                and self._halted is None
                and self._lost is None
            ),
            abandoned=abandoned + self._orphan_rows,
            halted=self._halted,
            database=self._lost,
        )

    def _mend(self) -> None:
        """During an outage of the database: retry the held writes when due; past --db-retry,
        stop the run (in-flight requests still finish, their outcomes held and journaled)."""
        if self._lost is None and self._backlog.expired():
            self._give_up()
            log.error("stopping the run: %s", self._lost)
            self._stop.set()
        elif self._backlog.held:
            self._backlog.flush()

    def _give_up(self) -> None:
        backlog = self._backlog
        where = (
            f"{backlog.held} outcomes are kept in the journal {backlog.journal}, which the next "
            "`batch-sender run` (or `reconcile`, `db upgrade`) applies first"
            if backlog.journal is not None
            else "every outcome it held is recorded"
        )
        if backlog.unjournaled:
            where += (
                f"; {backlog.unjournaled} outcomes could not be journaled either and are lost"
                " (their rows stay 'sending': the next run settles them with querymsg)"
            )
        self._lost = DatabaseLost(
            f"the results database stayed unusable for --db-retry {backlog.retry_for:.0f}s "
            f"({backlog.error}); {where}; run the same command again once it is back"
        )

    def _fence(self) -> None:
        """Stop sending when this worker's lease may lapse: its heartbeat has failed for
        ``leases.FENCE`` of a lease, and soon other workers take its rows for dead and settle
        them; a request leaving after that could be sent twice."""
        if self._lease is None or self._stop.is_set():
            return
        age = leases.unrenewed_for(self._worker)
        if age is not None and age > self._lease * leases.FENCE:
            self._fatal = self._fatal or RunStopped(
                f"this worker could not renew its lease for {age:.0f}s (--lease {self._lease:g}):"
                " stopping before other workers take its rows for dead"
            )
            log.error("stopping the run: %s", self._fatal)
            self._stop.set()

    def _observe(self, chunk: Chunk, future: Future[ChunkResult]) -> None:
        """Let a finished request's answer size the next claims (``exposure``), as soon as it
        is back: the next claim, not the next recording, must already risk less."""
        if future.exception() is None:
            self._exposure.observe(verdict(future.result().outcomes), len(chunk.recipients))

    def _record(
        self, finished: list[tuple[Chunk, Future[ChunkResult]]], progress: SendProgress
    ) -> bool:
        """Persist finished chunks in one transaction (or hold them, journaled, while the
        database fails: ``backlog``); True if rows went back to pending."""
        batch = Batch()
        outcomes, accepted, release = batch.outcomes, batch.accepted, batch.release
        orphaned: list[Chunk] = []  # held by a sending process that died
        why = ""
        for chunk, future in finished:
            try:
                result = future.result()
            except SendingProcessError as exc:
                orphaned.append(chunk)
                why = why or str(exc)
                continue
            except Exception as exc:  # a bug, not a gateway answer: keep the rows, stop the run
                log.exception("sending chunk %s failed unexpectedly", chunk.client_message_id)
                result = ChunkResult(
                    all_outcomes(chunk, Status.UNKNOWN, OutcomeUnknown(f"internal error: {exc!r}")),
                    stop=RunStopped(f"internal error: {exc!r}"),
                )
            if isinstance(result.outcomes, SentOutcomes):
                accepted.append(result.outcomes)
                progress.sent += len(result.outcomes)
            else:
                outcomes.extend(result.outcomes)
            release.extend(result.release)
            if result.outcomes or result.release:  # the journal's line, if it comes to that
                batch.entries.append((chunk.client_message_id, result.outcomes, result.release))
            progress.requests += result.requests
            progress.retries += max(0, result.requests - 1)
            if result.stop is not None and self._fatal is None:
                self._fatal = result.stop
                log.error("stopping the run: %s", result.stop)
                self._stop.set()
        for outcome in outcomes:
            if outcome.status is Status.SENT:
                progress.sent += 1
            elif outcome.status is Status.FAILED:
                progress.failed += 1
            else:
                progress.unknown += 1
        if orphaned:
            self._orphaned(orphaned, why)
        self._backlog.write(batch)
        return bool(release)

    def _orphaned(self, chunks: list[Chunk], why: str) -> None:
        """Chunks a dead sending process held: it may have sent them, so their rows stay
        ``sending`` under this worker, which the next run finds dead and settles with querymsg.
        Said once per run, not once per chunk."""
        self._orphan_rows += sum(len(c.recipients) for c in chunks)
        if self._fatal is None:
            self._fatal = RunStopped(
                f"{why}: the requests it held stay 'sending' and the next run settles them "
                "with querymsg"
            )
            log.error("stopping the run: %s", self._fatal)
            self._stop.set()
