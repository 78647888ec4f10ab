"""What each failure means, and how retries wait: DESIGN.md §3 in one place.

:func:`decide` is the one rule: every error of a request (and every per-number error code of an
answer, through :func:`decide_code`) maps to one :class:`Action`, with the reason. The courier
acts on it; tenacity retries exactly what it calls ``RETRY``.

Only a :class:`~batch_sender.errors.RetryableError` is retried, and only when the request provably
did not take effect: it never left (connect error, connect/pool timeout), or the gateway said so
(HTTP 429/503, a SOAP Fault, ERR 901, ERR 003/005 again after the client's re-auth).
Everything else is decided by the sender:
``Throttled`` pauses every worker, ``OutcomeUnknown`` is never resent, ``RunStopped`` stops the run.

A bare HTTP 500 (an error page, not a SOAP Fault), 502 or 504 is *not* retried, although the
client raises it as ``ServerBusy``: it says that the server (or a proxy in front of it) failed
while handling the request, not that the gateway never accepted it, so resending could send the
message twice. Its recipients become ``unknown`` and ``querymsg`` settles them (ERR 104: never
accepted, back to pending; found: sent for a one-number request). A 503 or 429
says "not processed, come back later"; a SOAP Fault and ERR 901 are the gateway's own "retry".
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import tenacity
from tenacity import RetryCallState

from batch_sender.errors import (
    OutcomeUnknown,
    RequestRejected,
    RetryableError,
    RunStopped,
    ServerBusy,
    SessionExpired,
    Throttled,
    gateway_error_for_code,
)

__all__ = [
    "INITIAL_BACKOFF",
    "JITTER",
    "MAX_BACKOFF",
    "Action",
    "Decision",
    "async_policy",
    "decide",
    "decide_code",
    "is_retryable",
    "policy",
]

INITIAL_BACKOFF = 0.5  # seconds before the first retry
MAX_BACKOFF = 30.0  # seconds: the cap of one wait
JITTER = 1.0  # seconds of random jitter added to each wait
MAX_RETRY_AFTER = 300.0  # seconds: a longer Retry-After is capped
#: HTTP statuses whose request the server did not process, one reason each:
#: - 429 Too Many Requests: the server refused the request before handling it (rate limit);
#: - 503 Service Unavailable: the server is not taking requests now and says "come back later".
#: Not retried (their rows become ``unknown`` and querymsg settles them):
#: - 500: the server failed somewhere while handling it, possibly after queueing the messages;
#: - 502 Bad Gateway / 504 Gateway Timeout: a proxy in front of the gateway lost or timed out
#:   the upstream answer; the gateway may well have taken the request (seen: 6 of 6 sent twice).
RETRYABLE_HTTP = frozenset({429, 503})


class Action(enum.Enum):
    """What to do with a request's rows after an error."""

    #: provably not taken (never left, or the gateway said "not processed"): send again
    RETRY = "retry"
    #: ERR 130, not taken: every courier waits until ``Decision.until``, then sends again
    PAUSE = "pause"
    #: may have been taken: the rows become ``unknown`` and querymsg settles them; never resent
    UNKNOWN = "unknown"
    #: refused for every number of the request: the rows are ``failed`` with the code
    FAIL = "fail"
    #: nothing more can be sent (auth, account, credit): the rows go back to pending, run stops
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str
    until: float | None = None  # PAUSE: the epoch second sending may resume


def decide(exc: BaseException) -> Decision:
    """The one rule: what an error of one request means for its rows (DESIGN.md §3).

    Only what provably never reached the gateway, or what the gateway itself said it did not
    process, is ``RETRY``. Everything that may have been accepted is ``UNKNOWN``. A ``RETRY``
    whose attempts ran out becomes a stop of the run (the rows were not taken: pending again).
    """
    match exc:
        case Throttled():
            return Decision(Action.PAUSE, "ERR 130: MT limit reached, not taken", until=exc.until)
        case ServerBusy(status=status) if status in RETRYABLE_HTTP:
            return Decision(Action.RETRY, f"HTTP {status}: the server did not process it")
        case ServerBusy(status=status):
            # 500, 502, 504: a server or proxy failed while handling it, perhaps after acceptance
            return Decision(Action.UNKNOWN, f"HTTP {status}: the gateway may have accepted it")
        case SessionExpired():
            # reaches the policy only when the session ended again right after the client's own
            # re-authentication: the gateway refused the request, so another try is safe
            return Decision(Action.RETRY, "session expired again after re-authentication")
        case RetryableError():
            # connect error, connect/pool timeout (never left), SOAP Fault, ERR 901 "retry"
            return Decision(Action.RETRY, "not taken: never left, or the gateway said retry")
        case OutcomeUnknown():
            # read timeout, connection lost after sending, an answer we cannot read
            return Decision(Action.UNKNOWN, "the request left and its answer was lost")
        case RequestRejected():
            return Decision(Action.FAIL, "refused by the gateway for every number")
        case RunStopped():
            return Decision(Action.STOP, "nothing more can be sent in this run")
        case _:
            return Decision(Action.UNKNOWN, f"unexpected error: {type(exc).__name__}")


def decide_code(code: str, description: str = "") -> Decision:
    """What a per-number error code in an answer means for that number (same rule as
    :func:`decide`: the code is read as if the whole request had failed with it)."""
    return decide(gateway_error_for_code(code, description))


def is_retryable(exc: BaseException) -> bool:
    """Whether sending the request again is safe: it provably did not take effect."""
    return decide(exc).action is Action.RETRY


class wait_retry_after(tenacity.wait.wait_base):  # noqa: N801 (tenacity's naming)
    """Wait what the server asked (``Retry-After``), but never less than ``fallback`` says."""

    def __init__(self, fallback: tenacity.wait.wait_base, *, scale: float = 1.0) -> None:
        self.fallback = fallback
        self.scale = scale

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.fallback(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), MAX_RETRY_AFTER) * self.scale)
        return wait


class stop_when_set(tenacity.stop.stop_base):  # noqa: N801
    """Stop retrying once the run is being stopped (a signal, a fatal error elsewhere)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def _retrying(
    *,
    max_attempts: int,
    stop_event: threading.Event,
    initial: float,
    maximum: float,
    jitter: float,
    scale: float,
    retryable: Callable[[BaseException], bool],
) -> dict[str, Any]:
    """What is retried, how long each wait is, when retrying ends: the one configuration of
    :func:`policy` and :func:`async_policy` (they differ only in how they sleep)."""
    return {
        "retry": tenacity.retry_if_exception(retryable),
        "wait": wait_retry_after(
            tenacity.wait_exponential(multiplier=initial * scale, max=maximum * scale)
            + tenacity.wait_random(0, jitter * scale),
            scale=scale,
        ),
        "stop": tenacity.stop_after_attempt(max_attempts) | stop_when_set(stop_event),
        "reraise": True,
    }


def policy(
    *,
    max_attempts: int,
    stop_event: threading.Event,
    sleep: Callable[[float], None] | None = None,
    initial: float = INITIAL_BACKOFF,
    maximum: float = MAX_BACKOFF,
    jitter: float = JITTER,
    scale: float = 1.0,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> tenacity.Retrying:
    """The retry policy of one request: exponential backoff with jitter, Retry-After honoured.

    ``sleep`` defaults to waiting on ``stop_event``, so a stopping run does not sit out a backoff;
    tests pass a recorder instead and never sleep. ``scale`` multiplies every wait, Retry-After
    included (fault-injection tests run at 0.01 rather than sleeping for real). ``retryable``
    widens or narrows what is tried again (the run's first ``auth`` retries any network error).
    """

    def interruptible_sleep(seconds: float) -> None:
        stop_event.wait(seconds)

    return tenacity.Retrying(
        sleep=sleep or interruptible_sleep,
        **_retrying(
            max_attempts=max_attempts,
            stop_event=stop_event,
            initial=initial,
            maximum=maximum,
            jitter=jitter,
            scale=scale,
            retryable=retryable,
        ),
    )


def async_policy(
    *,
    max_attempts: int,
    stop_event: threading.Event,
    sleep: Callable[[float], Awaitable[None]],
    scale: float = 1.0,
) -> tenacity.AsyncRetrying:
    """:func:`policy` for coroutines: the same retries and waits, slept with ``sleep``
    (awaited; the courier's wakes up when the run stops)."""
    return tenacity.AsyncRetrying(
        sleep=sleep,
        **_retrying(
            max_attempts=max_attempts,
            stop_event=stop_event,
            initial=INITIAL_BACKOFF,
            maximum=MAX_BACKOFF,
            jitter=JITTER,
            scale=scale,
            retryable=is_retryable,
        ),
    )
