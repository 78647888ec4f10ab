"""What is retried, how often and how long to wait: DESIGN.md §3 as tenacity objects.

Only :class:`~batch_sender.errors.RetryableError` is retried: the request provably did not take
effect (it never left, or the gateway said so). Everything else is decided by the sender:
``Throttled`` pauses every worker, ``OutcomeUnknown`` is never resent, ``RunStopped`` stops the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import tenacity
from tenacity import RetryCallState

from batch_sender.errors import RetryableError

__all__ = ["INITIAL_BACKOFF", "MAX_BACKOFF", "policy"]

INITIAL_BACKOFF = 0.5  # seconds before the first retry
MAX_BACKOFF = 30.0  # seconds: the cap of one wait
JITTER = 1.0  # seconds of random jitter added to each wait
MAX_RETRY_AFTER = 300.0  # seconds: a longer Retry-After is capped


class wait_retry_after(tenacity.wait.wait_base):  # noqa: N801 (tenacity's naming)
    """Wait what the server asked (``Retry-After``), but never less than ``fallback`` says."""

    def __init__(self, fallback: tenacity.wait.wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.fallback(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), MAX_RETRY_AFTER))
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
) -> tenacity.Retrying:
    """The retry policy of one request: exponential backoff with jitter, Retry-After honoured.

    ``sleep`` defaults to waiting on ``stop_event``, so a stopping run does not sit out a backoff;
    tests pass a recorder instead and never sleep.
    """

    def interruptible_sleep(seconds: float) -> None:
        stop_event.wait(seconds)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetryableError),
        wait=wait_retry_after(
            tenacity.wait_exponential(multiplier=initial, max=maximum)
            + tenacity.wait_random(0, jitter)
        ),
        stop=tenacity.stop_after_attempt(max_attempts) | stop_when_set(stop_event),
        sleep=sleep or interruptible_sleep,
        reraise=True,
    )
