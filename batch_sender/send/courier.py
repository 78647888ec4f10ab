"""Carry one chunk to the gateway until it has an answer: the sending threads' side of a run.

A :class:`Courier` holds the sending policy of DESIGN.md §3 (retries by tenacity, the account's
rate, the ERR 130 pause that holds every courier of the process, stopping at once on news that
stops the run) and turns the gateway's answer into recipient states (:func:`outcomes_for`). It
never touches the database: the coordinator (``coordinator.Sender``) claims the chunks and records
the :class:`ChunkResult` each one comes back with. Couriers run on threads of the coordinator's
process or, for large campaigns, on threads of a process of their own (``pool``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from batch_sender.config import MessageOptions
from batch_sender.errors import (
    GatewayError,
    RunStopped,
    SessionExpired,
    gateway_error_for_code,
)
from batch_sender.gateway import GatewayClient, Message, Receipt, wire
from batch_sender.send import policy
from batch_sender.send.policy import Action
from batch_sender.send.ratelimit import PauseGate, RateLimiter
from batch_sender.states import Status
from batch_sender.store import Chunk, Outcome, SentOutcomes

__all__ = ["ChunkResult", "Courier", "Job", "Rules", "all_outcomes", "outcomes_for"]

log = logging.getLogger(__name__)

#: built ``Message`` objects a courier keeps by ``messages.id`` (``Rules._message``). Same-text and
#: templated campaigns reuse a handful, but distinct texts bring a new one with every request:
#: unbounded, the sending process kept every message of the campaign (about 400 bytes each, so
#: 1M distinct texts held ~400 MB). A pure cache: emptied when full, rebuilt from the chunk.
MESSAGE_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """What became of one chunk: outcomes to record, rows to hand back, and run-level news."""

    outcomes: Sequence[Outcome] = ()  # a tuple, or SentOutcomes when every one was accepted
    release: tuple[int, ...] = ()  # claimed but not accepted: back to pending
    stop: GatewayError | None = None  # the run must stop (auth, credit, gateway down)
    requests: int = 0  # HTTP requests this chunk took, retries included
    pause_until: float | None = None  # ERR 130 mid-list: epoch second sending may resume


def outcomes_for(chunk: Chunk, receipts: Sequence[Receipt]) -> ChunkResult:
    """Map one ``sendmsg`` answer to recipient states: the single place where that is decided.

    Each ``<return>`` is matched to its recipient by its ``To:`` number. An ID means ``sent``; a
    stop code (301 no credit, mid-list too) hands the row back to ``pending`` and stops the run;
    ERR 130 mid-list hands the row back for after the pause; any other code is that number's
    failure. A recipient the answer does not mention, or whose ID is not 32 hex digits, is
    ``unknown``: never lost, never resent, never ``sent`` without the gateway's word.
    """
    by_number = {r.msisdn: r.id for r in chunk.recipients}
    sent: dict[int, str] = {}
    outcomes: list[Outcome] = []  # the others: failed, unknown
    release: list[int] = []
    stop: GatewayError | None = None
    pause_until: float | None = None
    for receipt in receipts:
        number = receipt.to if receipt.to is not None else ""
        rid = by_number.pop(number, None)
        if rid is None:
            rid = by_number.pop(number.lstrip("+0"), None)
        if rid is None:
            log.warning("gateway answered for a number not in the request, or twice: %r", receipt)
            continue
        code = receipt.error_code
        if receipt.api_message_id is not None:
            if wire.is_message_id(receipt.api_message_id):
                sent[rid] = receipt.api_message_id
                continue
            # "ID: 42": the gateway may have accepted it, but this is not its word for the number
            outcomes.append(
                Outcome(
                    rid,
                    Status.UNKNOWN,
                    error_description=(
                        f"malformed message ID {receipt.api_message_id[:40]!r} in the answer"
                    ),
                )
            )
        elif (
            decision := policy.decide_code(code or "", receipt.error_description or "")
        ).action in (
            Action.PAUSE,
            Action.STOP,
            Action.RETRY,
        ):
            # A request-level error repeated for each number, or credit running out mid-list:
            # this number was not accepted, so it goes back to pending.
            release.append(rid)
            if decision.action is Action.PAUSE:
                pause_until = max(pause_until or 0.0, decision.until or 0.0)
            elif decision.action is Action.STOP and stop is None:
                stop = gateway_error_for_code(code or "", receipt.error_description or "")
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
    if outcomes:
        everyone = tuple(Outcome(rid, Status.SENT, api_id) for rid, api_id in sent.items())
        return ChunkResult((*everyone, *outcomes), tuple(release), stop, 1, pause_until)
    # the usual answer, packed here for the store (see SentOutcomes)
    accepted = SentOutcomes.of(sent) if sent else ()
    return ChunkResult(accepted, tuple(release), stop, 1, pause_until)


def all_outcomes(chunk: Chunk, status: Status, exc: GatewayError) -> tuple[Outcome, ...]:
    description = (exc.description or str(exc))[:255]
    return tuple(
        Outcome(r.id, status, error_code=exc.code, error_description=description)
        for r in chunk.recipients
    )


@dataclass(frozen=True, slots=True)
class Job:
    """One chunk as its requests carry it."""

    numbers: list[str]
    message: Message
    units: int  # message parts: what the rate limiter counts
    released: tuple[int, ...]  # every row of the chunk, for when it is handed back


class Rules:
    """What a courier does with each answer and each error: shared by the threads' courier
    (:class:`Courier`) and the event loop's (``send.aio.AsyncCourier``), which differ only in
    how they wait and send. One decision (``policy.decide``) and one outcome mapping
    (:func:`outcomes_for`) for both."""

    def __init__(
        self,
        *,
        options: MessageOptions,
        max_attempts: int,
        max_wait: float,
        stop: threading.Event,
        backoff_scale: float = 1.0,
    ) -> None:
        self.stop = stop  # set: no request leaves any more; chunks not sent go back to pending
        self._options = options
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._backoff_scale = backoff_scale
        self._gate = PauseGate()
        self._messages: dict[int, Message] = {}

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
            if len(self._messages) >= MESSAGE_CACHE_SIZE:
                self._messages.clear()
            self._messages[chunk.message_id] = message
        return message

    def _job(self, chunk: Chunk) -> Job:
        numbers = [r.msisdn for r in chunk.recipients]
        released = tuple(r.id for r in chunk.recipients)
        return Job(numbers, self._message(chunk), chunk.parts * len(numbers), released)

    def _finished(self, result: ChunkResult) -> ChunkResult:
        """News that stops the run stops every courier at once, not when the coordinator gets
        round to recording it (no request may leave after a 301 came back)."""
        if result.stop is not None:
            self.stop.set()
        return result

    @staticmethod
    def _stopped(job: Job, requests: int) -> ChunkResult:
        """The run stops before this chunk's request left: its rows go back to pending."""
        return ChunkResult(release=job.released, requests=requests)

    def _answered(self, chunk: Chunk, receipts: Sequence[Receipt], requests: int) -> ChunkResult:
        """The gateway answered: its receipts as recipient states (ERR 130 mid-list pauses)."""
        result = outcomes_for(chunk, receipts)
        if result.pause_until is not None:
            self._gate.pause_until(result.pause_until)
        return ChunkResult(
            result.outcomes, result.release, result.stop, requests, result.pause_until
        )

    def _failed(
        self, chunk: Chunk, job: Job, exc: GatewayError, requests: int
    ) -> ChunkResult | None:
        """What ``policy.decide`` says of a request's error, as the chunk's result; None when
        every courier is now paused (ERR 130) and the chunk is to be sent again after it."""
        decision = policy.decide(exc)
        released = job.released
        match decision.action:
            case Action.PAUSE:
                until = decision.until or 0.0
                wait_s = until - time.time()
                if wait_s > self._max_wait:
                    stop = RunStopped(
                        f"{exc}; that is {wait_s:.0f}s away, past --max-wait {self._max_wait:.0f}s",
                        code=exc.code,
                        description=exc.description,
                    )
                    return ChunkResult(release=released, stop=stop, requests=requests)
                log.warning("gateway MT limit reached: pausing every worker for %.1fs", wait_s)
                self._gate.pause_until(until)
                return None
            case Action.UNKNOWN:
                return self._unknown(chunk, exc, requests)
            case Action.FAIL:
                return ChunkResult(all_outcomes(chunk, Status.FAILED, exc), requests=requests)
            case Action.RETRY if not isinstance(exc, SessionExpired):
                # the attempts ran out; nothing was taken, so the rows go back
                if self.stop.is_set():
                    return ChunkResult(release=released, requests=requests)
                stop = RunStopped(
                    f"gateway unavailable after {requests} attempts: {exc}",
                    code=exc.code,
                    description=exc.description,
                )
                return ChunkResult(release=released, stop=stop, requests=requests)
            case _:  # STOP, or a session that keeps expiring: the run stops
                if isinstance(exc, SessionExpired) and self.stop.is_set():
                    return ChunkResult(release=released, requests=requests)
                return ChunkResult(release=released, stop=exc, requests=requests)

    @staticmethod
    def _unknown(chunk: Chunk, exc: GatewayError, requests: int) -> ChunkResult:
        """The request may have been accepted: its rows are ``unknown``, never resent blindly."""
        log.warning(
            "outcome of request %s unknown (%s): its %d recipients are 'unknown'",
            chunk.client_message_id,
            exc,
            len(chunk.recipients),
        )
        return ChunkResult(all_outcomes(chunk, Status.UNKNOWN, exc), requests=requests)


class Courier(Rules):
    """Send chunks with one gateway client under one sending policy; share it between threads."""

    def __init__(
        self,
        *,
        client: GatewayClient,
        options: MessageOptions,
        limiter: RateLimiter,
        max_attempts: int,
        max_wait: float,
        stop: threading.Event,
        sleep: Callable[[float], None] | None = None,
        backoff_scale: float = 1.0,
    ) -> None:
        super().__init__(
            options=options,
            max_attempts=max_attempts,
            max_wait=max_wait,
            stop=stop,
            backoff_scale=backoff_scale,
        )
        self.client = client
        self._limiter = limiter
        self._sleep = sleep

    def send(self, chunk: Chunk) -> ChunkResult:
        """Send one chunk until it has an answer, a final error, or the run stops."""
        return self._finished(self._send_chunk(chunk))

    def _send_chunk(self, chunk: Chunk) -> ChunkResult:
        job = self._job(chunk)
        requests = 0
        while True:
            self._gate.wait(self.stop)
            if self.stop.is_set():
                return self._stopped(job, requests)
            try:
                # the first attempt outside tenacity, as the event loop's courier does; tenacity
                # takes over only after a failure it retries, seeded with that failure
                if not self._ready(job):
                    return self._stopped(job, requests)
                requests += 1
                first: GatewayError | None = None
                try:
                    receipts = self._request(chunk, job)
                except GatewayError as exc:
                    if not policy.is_retryable(exc):
                        raise
                    first = exc
                if first is not None:
                    for attempt in policy.policy(
                        max_attempts=self._max_attempts,
                        stop_event=self.stop,
                        sleep=self._sleep,
                        scale=self._backoff_scale,
                    ):
                        with attempt:
                            if first is not None:  # tenacity's first attempt: the one above
                                failed, first = first, None
                                raise failed
                            if not self._ready(job):
                                return self._stopped(job, requests)
                            requests += 1
                            receipts = self._request(chunk, job)
            except GatewayError as exc:
                result = self._failed(chunk, job, exc, requests)
                if result is None:  # paused: every courier waits, then this chunk goes again
                    continue
                return result
            return self._answered(chunk, receipts, requests)

    def _ready(self, job: Job) -> bool:
        """Wait out the ERR 130 pause and the rate before a request; False if the run stopped
        meanwhile (the request must not leave)."""
        self._gate.wait(self.stop)
        self._limiter.acquire(job.units)
        return not self.stop.is_set()

    def _request(self, chunk: Chunk, job: Job) -> list[Receipt]:
        return self.client.sendmsg(job.numbers, job.message, climsgid=chunk.client_message_id)
