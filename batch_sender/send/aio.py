"""Couriers on an event loop: hundreds of requests in flight from one thread.

:class:`AsyncCourier` is :class:`~batch_sender.send.courier.Courier` awaited: the same
``courier.Rules`` decide what each answer and each error means (``policy.decide``,
``outcomes_for``), the same retries (``policy.async_policy``: tenacity, the same waits), the
same order before every request (the ERR 130 pause, then the rate, then a last look at the
stop). It only waits differently: a coroutine per chunk instead of a thread.

:class:`Dispatcher` starts one such coroutine per chunk while fewer than the limit are in flight
(``adaptive``: fixed, or ``auto``) and tells the limit what each request saw. It runs in the
sending process (``pool.child_main`` → :func:`serve`) or, for a smaller run, on an event-loop
thread of the run's process (:class:`LoopCouriers`). Neither touches the database: the
coordinator still claims every chunk before it is handed over and records what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from batch_sender.config import MessageOptions
from batch_sender.errors import GatewayError
from batch_sender.eventloop import new_loop
from batch_sender.gateway.aio import AsyncGatewayClient
from batch_sender.gateway.client import GatewayClient, Receipt
from batch_sender.send import policy
from batch_sender.send.adaptive import Limit, is_pushback
from batch_sender.send.courier import ChunkResult, Job, Rules
from batch_sender.send.exposure import Verdict, verdict
from batch_sender.send.ratelimit import RateLimiter
from batch_sender.store import Chunk

__all__ = ["AsyncCourier", "Dispatcher", "LoopCouriers", "StopSignal", "serve"]

log = logging.getLogger(__name__)

#: seconds between two looks at the run's stop event (set by any thread, a signal handler too):
#: how long a coroutine asleep in a pause, a backoff or a rate wait may take to notice it
STOP_POLL = 0.05
#: seconds late past its rate slot that a coroutine books another instead of leaving
RATE_LATE = 0.02
#: threads that book a shared (database) rate schedule for the loop's couriers
RATE_THREADS = 8

Token = TypeVar("Token")


def _no_sleep(seconds: float) -> None:
    """A rate limiter's sleep for coroutines: it books the slot, the coroutine awaits it."""


class StopSignal:
    """The run's stop (a :class:`threading.Event`, set from any thread) for coroutines to sleep
    on: :meth:`sleep` ends early when it is set. Make it on the loop that uses it."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self._woken = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        """Stop the run now (from the loop's thread)."""
        self.event.set()
        self._woken.set()

    def wake(self) -> None:
        """Look at the event now (from the loop's thread, after another thread set it)."""
        if self.event.is_set():
            self._woken.set()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0 or self.event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    async def _watch(self) -> None:
        while not self.event.is_set():
            await asyncio.sleep(STOP_POLL)
        self._woken.set()

    def close(self) -> None:
        self._watcher.cancel()


class Monitor:
    """What a courier tells about its requests (the dispatcher listens); by default nobody."""

    def answered(self, rtt: float) -> None:
        pass

    def failed(self, exc: BaseException, rtt: float) -> None:
        pass

    def rate_waited(self, delay: float) -> None:
        pass

    def paused(self) -> None:
        pass


class AsyncCourier(Rules):
    """:class:`~batch_sender.send.courier.Courier` for coroutines of one event loop."""

    def __init__(
        self,
        *,
        client: AsyncGatewayClient,
        options: MessageOptions,
        limiter: RateLimiter,
        max_attempts: int,
        max_wait: float,
        signal: StopSignal,
        backoff_scale: float = 1.0,
    ) -> None:
        super().__init__(
            options=options,
            max_attempts=max_attempts,
            max_wait=max_wait,
            stop=signal.event,
            backoff_scale=backoff_scale,
        )
        self.client = client
        self.monitor = Monitor()
        self._signal = signal
        self._rate = self._rate_local
        self._executor: ThreadPoolExecutor | None = None
        if type(limiter) is RateLimiter:
            # books slots without sleeping; the coroutine awaits its slot
            self._limiter = RateLimiter(limiter.rate, sleep=_no_sleep)
        else:  # a schedule kept elsewhere (the database): booked on threads, as it blocks
            self._limiter = limiter
            self._rate = self._rate_blocking

    async def send(self, chunk: Chunk) -> ChunkResult:
        """Send one chunk until it has an answer, a final error, or the run stops."""
        result = self._finished(await self._send_chunk(chunk))
        if result.stop is not None:
            self._signal.set()  # wakes every coroutine asleep in a pause, backoff or rate wait
        return result

    async def _send_chunk(self, chunk: Chunk) -> ChunkResult:
        job = self._job(chunk)
        requests = 0
        while True:
            await self._pause()
            if self.stop.is_set():
                return self._stopped(job, requests)
            try:
                # the first attempt outside tenacity (setting it up and iterating it was a third
                # of the courier's time); tenacity takes over only after a failure it retries,
                # seeded with that failure: the same retry decisions and the same waits
                if not await self._ready(job):
                    return self._stopped(job, requests)
                requests += 1
                first: GatewayError | None = None
                try:
                    receipts = await self._request(chunk, job)
                except GatewayError as exc:
                    if not policy.is_retryable(exc):
                        raise
                    first = exc
                if first is not None:
                    async for attempt in policy.async_policy(
                        max_attempts=self._max_attempts,
                        stop_event=self.stop,
                        sleep=self._signal.sleep,
                        scale=self._backoff_scale,
                    ):
                        with attempt:
                            if first is not None:  # tenacity's first attempt: the one above
                                failed, first = first, None
                                raise failed
                            if not await self._ready(job):
                                return self._stopped(job, requests)
                            requests += 1
                            receipts = await self._request(chunk, job)
            except GatewayError as exc:
                result = self._failed(chunk, job, exc, requests)
                if result is None:  # paused: every courier waits, then this chunk goes again
                    continue
                return result
            result = self._answered(chunk, receipts, requests)
            if result.pause_until is not None:  # ERR 130 for some numbers: pushback too
                self.monitor.paused()
            return result

    async def _ready(self, job: Job) -> bool:
        """Wait out the ERR 130 pause and the rate before a request; False if the run stopped
        meanwhile (the request must not leave)."""
        await self._pause()
        await self._rate(job.units)
        return not self.stop.is_set()

    async def _request(self, chunk: Chunk, job: Job) -> list[Receipt]:
        """One ``sendmsg`` of the chunk, its round trip told to the monitor."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            receipts = await self.client.sendmsg(
                job.numbers, job.message, climsgid=chunk.client_message_id
            )
        except GatewayError as exc:
            self.monitor.failed(exc, loop.time() - started)
            raise
        self.monitor.answered(loop.time() - started)
        return receipts

    async def _pause(self) -> None:
        """Wait while the gateway's MT limit (ERR 130) holds every courier, or until the stop."""
        while (left := self._gate.remaining()) > 0 and not self.stop.is_set():
            await self._signal.sleep(min(left, 1.0))

    async def _rate_local(self, units: int) -> None:
        delay = self._limiter.acquire(units)
        if delay <= 0:
            return
        self.monitor.rate_waited(delay)
        due = time.monotonic() + delay
        await self._signal.sleep(delay)
        if time.monotonic() - due > RATE_LATE and not self.stop.is_set():
            # woke late (the loop was held up): every request due meanwhile would leave at
            # once, over the rate; this one books a new slot instead (a lost slot costs
            # throughput, never the limit)
            await self._signal.sleep(self._limiter.acquire(units))

    async def _rate_blocking(self, units: int) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(RATE_THREADS, thread_name_prefix="batch-rate")
        loop = asyncio.get_running_loop()
        delay = await loop.run_in_executor(self._executor, self._limiter.acquire, units)
        if delay > 0:
            self.monitor.rate_waited(delay)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)


class Dispatcher(Monitor, Generic[Token]):
    """One coroutine per chunk while fewer than ``limit.limit`` are in flight; the others wait
    in order. ``deliver(token, result_or_exception)`` gets each chunk's end; ``on_limit(n)``
    each change of the limit."""

    def __init__(
        self,
        courier: AsyncCourier,
        limit: Limit,
        deliver: Callable[[Token, ChunkResult | BaseException], None],
        on_limit: Callable[[int], None] | None = None,
    ) -> None:
        self._courier = courier
        self._limit = limit
        self._deliver = deliver
        self._on_limit = on_limit
        self._queue: deque[tuple[Token, Chunk]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last = limit.limit
        courier.monitor = self

    @property
    def limit(self) -> int:
        return self._last

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, token: Token, chunk: Chunk) -> None:
        self.submit_all(((token, chunk),))

    def submit_all(self, items: Iterable[tuple[Token, Chunk]]) -> None:
        self._queue.extend(items)
        self._idle.clear()
        self._pump()

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every chunk handed over has ended; False if ``timeout`` came first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and len(self._tasks) < self._limit.limit:
            token, chunk = self._queue.popleft()
            task = loop.create_task(self._run(token, chunk))
            self._tasks.add(task)
        if not self._queue and not self._tasks:
            self._idle.set()

    async def _run(self, token: Token, chunk: Chunk) -> None:
        try:
            result: ChunkResult | BaseException = await self._courier.send(chunk)
        except Exception as exc:  # a bug: handed to the coordinator, which records it
            result = exc
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
        try:
            self._deliver(token, result)
        finally:
            if (
                len(chunk.recipients) > 1
                and isinstance(result, ChunkResult)
                and verdict(result.outcomes) is Verdict.LOST
            ):
                self._withdraw()
            self._pump()

    def _withdraw(self) -> None:
        """After a lost answer of a many-number request, hand back the many-number chunks still
        waiting here: they never left, so their rows go back to ``pending`` and are claimed
        again at the size the coordinator now risks (``exposure``: one number per request).
        Only the requests already in flight keep their size."""
        kept: deque[tuple[Token, Chunk]] = deque()
        withdrawn = 0
        while self._queue:
            token, chunk = self._queue.popleft()
            if len(chunk.recipients) > 1:
                self._deliver(token, ChunkResult(release=tuple(r.id for r in chunk.recipients)))
                withdrawn += 1
            else:
                kept.append((token, chunk))
        self._queue = kept
        if withdrawn:
            log.info(
                "a lost answer: %d queued requests handed back, to go one number each", withdrawn
            )

    # -- Monitor: what the courier saw --------------------------------------------------------

    def answered(self, rtt: float) -> None:
        binding = bool(self._queue) or len(self._tasks) >= self._limit.limit
        self._limit.observe(rtt, binding=binding)
        self._changed()

    def failed(self, exc: BaseException, rtt: float) -> None:
        if is_pushback(exc):
            self._limit.pushback()
            self._changed()

    def rate_waited(self, delay: float) -> None:
        self._limit.rate_bound(delay)

    def paused(self) -> None:
        self._limit.pushback()
        self._changed()

    def _changed(self) -> None:
        limit = self._limit.limit
        if limit != self._last:
            log.debug("requests in flight: %d → %d", self._last, limit)
            self._last = limit
            if self._on_limit is not None:
                self._on_limit(limit)
            self._pump()


class LoopCouriers:
    """Couriers on an event loop in a thread of this process (the ``CourierPool`` of a run that
    sends from its own process): one thread for any number of requests in flight."""

    def __init__(
        self,
        *,
        client: GatewayClient,
        limit: Limit,
        options: MessageOptions,
        limiter: RateLimiter,
        max_attempts: int,
        max_wait: float,
        stop: threading.Event,
        backoff_scale: float = 1.0,
        max_connections: int,
    ) -> None:
        self._loop = new_loop()
        self._stop = stop
        self._limit = limit
        self._thread = threading.Thread(target=self._run, name="batch-sender-loop", daemon=True)
        self._thread.start()

        async def build() -> tuple[StopSignal, AsyncCourier, Dispatcher[Future[ChunkResult]]]:
            signal = StopSignal(stop)
            courier = AsyncCourier(
                client=AsyncGatewayClient(client, max_connections=max_connections),
                options=options,
                limiter=limiter,
                max_attempts=max_attempts,
                max_wait=max_wait,
                signal=signal,
                backoff_scale=backoff_scale,
            )
            return signal, courier, Dispatcher(courier, limit, _resolve)

        built = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        self._signal, self._courier, self._dispatcher = built

    def _run(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def capacity(self) -> int:
        """Requests in flight now allowed (the coordinator claims for that many)."""
        return self._dispatcher.limit

    def submit(self, chunk: Chunk) -> Future[ChunkResult]:
        return self.submit_all((chunk,))[0]

    def submit_all(self, chunks: Sequence[Chunk]) -> list[Future[ChunkResult]]:
        """Hand ``chunks`` to the loop with one wake-up."""
        items: list[tuple[Future[ChunkResult], Chunk]] = []
        for chunk in chunks:
            future: Future[ChunkResult] = Future()
            future.set_running_or_notify_cancel()
            items.append((future, chunk))
        self._loop.call_soon_threadsafe(self._dispatcher.submit_all, items)
        return [future for future, _ in items]

    def stop(self) -> None:
        self._stop.set()
        self._loop.call_soon_threadsafe(self._signal.wake)

    def shutdown(self) -> None:
        """End the loop once what was submitted has ended (without waiting here)."""
        asyncio.run_coroutine_threadsafe(self._finish(), self._loop)

    async def _finish(self) -> None:
        await self._dispatcher.drain()
        self._signal.close()
        self._courier.close()
        await self._courier.client.aclose()
        self._loop.call_soon(self._loop.stop)


def _resolve(future: Future[ChunkResult], result: ChunkResult | BaseException) -> None:
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def serve(
    *,
    client: GatewayClient,
    limit: Limit,
    options: MessageOptions,
    rate: float | None,
    max_attempts: int,
    max_wait: float,
    backoff_scale: float,
    max_connections: int,
    read: Callable[[], tuple[Any, ...] | None],
    send: Callable[[tuple[Any, ...]], None],
    send_results: Callable[[list[tuple[int, ChunkResult]]], None],
    drain_timeout: float,
) -> None:
    """The sending process's work, on its event loop (``eventloop.run``): chunks from ``read``
    (``("chunks", [(seq, chunk), …])``, ``("stop",)``; None at the end of input, read on a
    thread of its own), results to ``send_results`` (those that ended in one turn of the loop
    together), errors and changes of the limit to ``send``; returns once the input ended and
    every chunk has."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    signal = StopSignal(stop)
    courier = AsyncCourier(
        client=AsyncGatewayClient(client, max_connections=max_connections),
        options=options,
        limiter=RateLimiter(rate),
        max_attempts=max_attempts,
        max_wait=max_wait,
        signal=signal,
        backoff_scale=backoff_scale,
    )

    answers: list[tuple[int, ChunkResult]] = []  # ended in this turn of the loop

    def flush() -> None:
        if not answers:
            return
        ended = answers[:]
        answers.clear()
        try:
            send_results(ended)
        except Exception:  # an answer that does not pickle (a bug): find it, send the others
            for seq, result in ended:
                try:
                    send_results([(seq, result)])
                except Exception as exc:
                    send(("error", seq, f"sending a chunk: {exc!r}"))

    def deliver(seq: int, result: ChunkResult | BaseException) -> None:
        if isinstance(result, BaseException):
            send(("error", seq, f"sending a chunk: {result!r}"))
            return
        if not answers:
            loop.call_soon(flush)
        answers.append((seq, result))

    dispatcher: Dispatcher[int] = Dispatcher(
        courier, limit, deliver, on_limit=lambda n: send(("limit", n))
    )
    ended = asyncio.Event()

    def take(message: tuple[Any, ...] | None) -> None:
        if message is None:
            ended.set()
        elif message[0] == "chunks":
            dispatcher.submit_all(message[1])
        elif message[0] == "stop":
            signal.set()

    def reader() -> None:
        while True:
            message = read()
            loop.call_soon_threadsafe(take, message)
            if message is None:
                return

    threading.Thread(target=reader, name="batch-sender-inbox", daemon=True).start()
    send(("ready",))
    await ended.wait()
    if not await dispatcher.drain(drain_timeout):
        log.warning("the sending process exits with requests still awaiting their answer")
    flush()
    signal.close()
    courier.close()
    await courier.client.aclose()
