"""What is retried, how often and how long to wait: DESIGN.md §3 as tenacity objects.

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

import threading
from collections.abc import Callable

import tenacity
from tenacity import RetryCallState

from batch_sender.errors import RetryableError, ServerBusy, SessionExpired

__all__ = ["INITIAL_BACKOFF", "JITTER", "MAX_BACKOFF", "is_retryable", "policy"]

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


def is_retryable(exc: BaseException) -> bool:
    """Whether sending the request again is safe: it provably did not take effect.

    ``SessionExpired`` reaches the policy only when the session ended again right after the
    client's own re-authentication; the gateway refused the request, so another try is safe.
    """
    if isinstance(exc, ServerBusy):
        return exc.status in RETRYABLE_HTTP
    return isinstance(exc, RetryableError | SessionExpired)


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
        retry=tenacity.retry_if_exception(retryable),
        wait=wait_retry_after(
            tenacity.wait_exponential(multiplier=initial * scale, max=maximum * scale)
            + tenacity.wait_random(0, jitter * scale),
            scale=scale,
        ),
        stop=tenacity.stop_after_attempt(max_attempts) | stop_when_set(stop_event),
        sleep=sleep or interruptible_sleep,
        reraise=True,
    )
