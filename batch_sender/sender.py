"""Send a campaign's pending recipients: claim chunks, send them on a worker pool, record outcomes.

One coordinator thread owns the database: it claims chunks (``pending → sending``, committed before
the request leaves), hands them to ``concurrency`` worker threads that share one keep-alive gateway
client, and records each chunk's outcome as it comes back. Workers hold the sending policy: the
account-wide rate, the ERR 130 pause that holds every worker, the retry rules of DESIGN.md §3.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from batch_sender import retry
from batch_sender.config import MessageOptions
from batch_sender.errors import (
    STOP_CODES,
    GatewayError,
    OutcomeUnknown,
    RequestRejected,
    RetryableError,
    RunStopped,
    SessionExpired,
    Throttled,
    gateway_error_for_code,
)
from batch_sender.gateway import GatewayClient, Message, Receipt
from batch_sender.ratelimit import PauseGate, RateLimiter
from batch_sender.states import Status
from batch_sender.store import Chunk, Outcome, Store

__all__ = [
    "ChunkResult",
    "SendProgress",
    "SendStats",
    "Sender",
    "is_live_worker",
    "outcomes_for",
    "worker_id",
]

log = logging.getLogger(__name__)

#: per-number codes that mean "not now" rather than "never": session lost, MT limit, internal error
RETRY_LATER_CODES = frozenset({"003", "005", "130", "901"})
QUEUE_DEPTH = 2  # chunks claimed ahead per worker, so workers never wait for the coordinator
POLL_INTERVAL = 0.5  # seconds the coordinator waits for a finished chunk before looking around
#: seconds a stopping run waits for requests already sent; after it, their rows stay `sending`
#: (owned by a process about to exit) and the next run settles them with querymsg
STOP_GRACE = 5.0


_live_workers: set[str] = set()  # claimed_by of the Senders running in this process


def new_client_message_id() -> str:
    """A unique ``climsgid`` for one request: 32 hex digits (the API allows 32 alphanumerics)."""
    return os.urandom(16).hex()


def worker_id() -> str:
    """Who claims rows: host, process and a per-run token (``claimed_by``)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_live_worker(claimed_by: str) -> bool:
    """Whether a Sender of this process is running under ``claimed_by`` right now."""
    return claimed_by in _live_workers


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What became of one chunk: outcomes to record, rows to hand back, and run-level news."""

    outcomes: tuple[Outcome, ...] = ()
    release: tuple[int, ...] = ()  # claimed but not accepted: back to pending
    stop: GatewayError | None = None  # the run must stop (auth, credit, gateway down)
    requests: int = 0  # HTTP requests this chunk took, retries included
    pause_until: float | None = None  # ERR 130 mid-list: epoch second sending may resume


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


def outcomes_for(chunk: Chunk, receipts: Sequence[Receipt]) -> ChunkResult:
    """Map one ``sendmsg`` answer to recipient states: the single place where that is decided.

    Each ``<return>`` is matched to its recipient by its ``To:`` number. An ID means ``sent``; a
    stop code (301 no credit, mid-list too) hands the row back to ``pending`` and stops the run;
    ERR 130 mid-list hands the row back for after the pause; any other code is that number's
    failure. A recipient the answer does not mention is ``unknown``: never lost, never resent.
    """
    by_number = {r.msisdn: r.id for r in chunk.recipients}
    outcomes: list[Outcome] = []
    release: list[int] = []
    stop: GatewayError | None = None
    pause_until: float | None = None
    for receipt in receipts:
        number = receipt.to if receipt.to is not None else ""
        rid = by_number.pop(number, None)
        if rid is None:
            rid = by_number.pop(number.lstrip("+0"), None)
        if rid is None:
            log.warning("gateway answered for a number not in the request: %r", receipt)
            continue
        code = receipt.error_code
        if receipt.api_message_id is not None:
            outcomes.append(Outcome(rid, Status.SENT, api_message_id=receipt.api_message_id))
        elif code in STOP_CODES or code in RETRY_LATER_CODES:
            # A request-level error repeated for each number, or credit running out mid-list:
            # this number was not accepted, so it goes back to pending.
            release.append(rid)
            error = gateway_error_for_code(code, receipt.error_description or "")
            if isinstance(error, Throttled):
                pause_until = max(pause_until or 0.0, error.until)
            elif isinstance(error, RunStopped) and stop is None:
                stop = error
        else:
            outcomes.append(
                Outcome(
                    rid,
                    Status.FAILED,
                    error_code=code,
                    error_description=receipt.error_description,
                )
            )
    outcomes.extend(
        Outcome(rid, Status.UNKNOWN, error_description="the gateway's answer did not mention it")
        for rid in by_number.values()
    )
    return ChunkResult(tuple(outcomes), tuple(release), stop, 1, pause_until)


def _all(chunk: Chunk, status: Status, exc: GatewayError) -> tuple[Outcome, ...]:
    description = (exc.description or str(exc))[:255]
    return tuple(
        Outcome(r.id, status, error_code=exc.code, error_description=description)
        for r in chunk.recipients
    )


class _WorkerPool:
    """``size`` daemon threads running ``work(chunk)``: a request stuck in a read cannot keep a
    stopping process alive (a ThreadPoolExecutor's threads are joined at interpreter exit)."""

    def __init__(self, size: int, work: Callable[[Chunk], ChunkResult]) -> None:
        self._work = work
        self._queue: queue.SimpleQueue[tuple[Chunk, Future[ChunkResult]] | None]
        self._queue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"batch-sender-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, chunk: Chunk) -> Future[ChunkResult]:
        future: Future[ChunkResult] = Future()
        self._queue.put((chunk, future))
        return future

    def shutdown(self) -> None:
        """Let every thread end once the work queued before this is done (without waiting)."""
        for _ in self._threads:
            self._queue.put(None)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            chunk, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._work(chunk))
            except BaseException as exc:  # handed to the coordinator, which records it
                future.set_exception(exc)


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
        concurrency: int,
        limiter: RateLimiter,
        max_attempts: int,
        max_wait: float,
        stop: threading.Event,
        worker: str | None = None,
        progress: Callable[[SendProgress], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        backoff_scale: float = 1.0,
    ) -> None:
        self._store = store
        self._client = client
        self._campaign_id = campaign_id
        self._options = options
        self._chunk_size = chunk_size
        self._concurrency = concurrency
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._stop = stop
        self._worker = worker or worker_id()
        self._progress_cb = progress
        self._sleep = sleep
        self._backoff_scale = backoff_scale
        self._gate = PauseGate()
        self._messages: dict[int, Message] = {}
        self._fatal: GatewayError | None = None

    # --- coordinator -------------------------------------------------------------------------

    def run(self) -> SendStats:
        progress = SendProgress()
        in_flight: dict[Future[ChunkResult], Chunk] = {}
        exhausted = False
        stopping_since: float | None = None
        abandoned = 0
        pool = _WorkerPool(self._concurrency, self._send)
        _live_workers.add(self._worker)
        try:
            while True:
                room = self._concurrency * QUEUE_DEPTH - len(in_flight)
                if not exhausted and not self._stop.is_set() and room >= self._concurrency:
                    # claim in batches, once a worker's worth of room is free: one transaction
                    # for several chunks, and never so many that claims sit idle for long
                    chunks = self._store.claim_chunks(
                        self._campaign_id,
                        size=self._chunk_size,
                        count=room,
                        worker=self._worker,
                        new_id=new_client_message_id,
                    )
                    exhausted = not chunks
                    for chunk in chunks:
                        in_flight[pool.submit(chunk)] = chunk
                if not in_flight:
                    break
                timeout = POLL_INTERVAL
                if self._stop.is_set():
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
                done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                if done:
                    released = self._record([(in_flight.pop(f), f) for f in done], progress)
                    exhausted = exhausted and not released
                    if self._progress_cb is not None:
                        self._progress_cb(progress)
        finally:
            pool.shutdown()
            _live_workers.discard(self._worker)
        return SendStats(
            progress,
            stop=self._fatal,
            interrupted=self._stop.is_set() and self._fatal is None,
            abandoned=abandoned,
        )

    def _record(
        self, finished: list[tuple[Chunk, Future[ChunkResult]]], progress: SendProgress
    ) -> bool:
        """Persist finished chunks in one transaction; True if rows went back to pending."""
        outcomes: list[Outcome] = []
        release: list[int] = []
        for chunk, future in finished:
            try:
                result = future.result()
            except Exception as exc:  # a bug, not a gateway answer: keep the rows, stop the run
                log.exception("sending chunk %s failed unexpectedly", chunk.client_message_id)
                result = ChunkResult(
                    _all(chunk, Status.UNKNOWN, OutcomeUnknown(f"internal error: {exc!r}")),
                    stop=RunStopped(f"internal error: {exc!r}"),
                )
            outcomes.extend(result.outcomes)
            release.extend(result.release)
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
        if outcomes:
            self._store.record(outcomes)
        if release:
            self._store.release(release)
        return bool(release)

    # --- workers -----------------------------------------------------------------------------

    def _message(self, chunk: Chunk) -> Message:
        message = self._messages.get(chunk.message_id)
        if message is None:
            o = self._options
            message = Message(
                text=chunk.wire_text,
                unicode=chunk.unicode,
                sender=o.sender,
                msg_type="SMS_FLASH" if o.flash else None,
                udh=o.udh,
                callback=o.callback,
                concat=chunk.parts if chunk.parts > 1 else None,
                options=o.params,
            )
            self._messages[chunk.message_id] = message
        return message

    def _send(self, chunk: Chunk) -> ChunkResult:
        """Send one chunk; news that stops the run stops every worker at once, not when the
        coordinator gets round to recording it (no request may leave after a 301 came back)."""
        result = self._send_chunk(chunk)
        if result.stop is not None:
            self._stop.set()
        return result

    def _send_chunk(self, chunk: Chunk) -> ChunkResult:
        """Send one chunk until it has an answer, a final error, or the run stops."""
        numbers = [r.msisdn for r in chunk.recipients]
        message = self._message(chunk)
        units = chunk.parts * len(numbers)
        released = tuple(r.id for r in chunk.recipients)
        requests = 0
        while True:
            self._gate.wait(self._stop)
            if self._stop.is_set():
                return ChunkResult(release=released, requests=requests)
            try:
                for attempt in retry.policy(
                    max_attempts=self._max_attempts,
                    stop_event=self._stop,
                    sleep=self._sleep,
                    scale=self._backoff_scale,
                ):
                    with attempt:
                        self._gate.wait(self._stop)
                        self._limiter.acquire(units)
                        if self._stop.is_set():  # stopped during a pause or a rate wait
                            return ChunkResult(release=released, requests=requests)
                        requests += 1
                        receipts = self._client.sendmsg(
                            numbers, message, climsgid=chunk.client_message_id
                        )
            except Throttled as exc:
                wait_s = exc.until - time.time()
                if wait_s > self._max_wait:
                    stop = RunStopped(
                        f"{exc}; that is {wait_s:.0f}s away, past --max-wait {self._max_wait:.0f}s",
                        code=exc.code,
                        description=exc.description,
                    )
                    return ChunkResult(release=released, stop=stop, requests=requests)
                log.warning("gateway MT limit reached: pausing every worker for %.1fs", wait_s)
                self._gate.pause_until(exc.until)
                continue
            except RetryableError as exc:
                if not retry.is_retryable(exc):  # a bare HTTP 500: it may have been accepted
                    return self._unknown(chunk, exc, requests)
                if self._stop.is_set():
                    return ChunkResult(release=released, requests=requests)
                stop = RunStopped(
                    f"gateway unavailable after {requests} attempts: {exc}",
                    code=exc.code,
                    description=exc.description,
                )
                return ChunkResult(release=released, stop=stop, requests=requests)
            except OutcomeUnknown as exc:
                return self._unknown(chunk, exc, requests)
            except RequestRejected as exc:
                return ChunkResult(_all(chunk, Status.FAILED, exc), requests=requests)
            except (RunStopped, SessionExpired) as exc:
                if isinstance(exc, SessionExpired) and self._stop.is_set():
                    return ChunkResult(release=released, requests=requests)
                return ChunkResult(release=released, stop=exc, requests=requests)
            result = outcomes_for(chunk, receipts)
            if result.pause_until is not None:
                self._gate.pause_until(result.pause_until)
            return ChunkResult(
                result.outcomes, result.release, result.stop, requests, result.pause_until
            )

    @staticmethod
    def _unknown(chunk: Chunk, exc: GatewayError, requests: int) -> ChunkResult:
        """The request may have been accepted: its rows are ``unknown``, never resent blindly."""
        log.warning(
            "outcome of request %s unknown (%s): its %d recipients are 'unknown'",
            chunk.client_message_id,
            exc,
            len(chunk.recipients),
        )
        return ChunkResult(_all(chunk, Status.UNKNOWN, exc), requests=requests)
