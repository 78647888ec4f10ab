"""An account-wide send rate, in message parts per second, shared by every worker thread.

Gateways throttle parts, not requests, so a request of 100 recipients of a 2-part text costs 200.
The limiter is a virtual schedule (GCRA): each request reserves the next free slot and waits for
it, so the long-run rate is exact and a burst never exceeds one request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["PauseGate", "RateLimiter"]


class RateLimiter:
    """Hand out ``rate`` units per second across threads; ``rate=None`` never waits."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = clock()  # when the next unit may go

    def acquire(self, units: int) -> float:
        """Block until ``units`` may be sent; return the seconds waited."""
        if self.rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + units / self.rate
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return delay


class PauseGate:
    """Every worker waits here while the gateway's MT limit (ERR 130) is in force."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0

    def pause_until(self, until: float) -> None:
        with self._lock:
            self._until = max(self._until, until)

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._until - self._clock())

    def wait(self, stop: threading.Event) -> None:
        """Sleep until the pause is over or the run stops."""
        while (left := self.remaining()) > 0 and not stop.is_set():
            stop.wait(min(left, 1.0))
