"""An account-wide send rate, in message parts per second, shared by every worker thread.

Gateways throttle parts, not requests, so a request of 100 recipients of a 2-part text costs 200.
The limiter is a virtual schedule (GCRA): each request reserves the next free slot and waits for
it, so the long-run rate is exact and a burst never exceeds one request.

:class:`SharedRateLimiter` keeps the same schedule for many processes on many machines: the
schedule lives in the database (``Store.reserve_rate``) and each process reserves a block of
slots at a time (a fraction of a second's worth), then hands them out locally to its threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from batch_sender.errors import StoreError

log = logging.getLogger(__name__)

__all__ = ["RESERVE_SECONDS", "PauseGate", "RateLimiter", "SharedRateLimiter"]

RESERVE_SECONDS = 0.25  # seconds of the account's rate a worker reserves per database round trip
_EPSILON = 1e-9  # seconds: float slack when checking that a request fits its block


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


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose schedule is shared with other processes through ``reserve``.

    ``reserve(units)`` books ``units`` on the shared schedule and returns the seconds until the
    booked block starts (``Store.reserve_rate`` bound to an account and rate). Requests are then
    placed back to back inside the block; one that does not fit books a new block: a whole
    number of requests of its size, about ``rate × block_seconds`` (so a run of equal requests
    wastes no slot). Blocks never overlap, so N processes together never exceed ``rate``; slots
    a process leaves unused (it fell behind, finished, or died) are lost, which costs
    throughput, never the limit. ``rate=None`` never waits and never reserves.
    """

    def __init__(
        self,
        rate: float | None,
        reserve: Callable[[float], float],
        *,
        block_seconds: float = RESERVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        super().__init__(rate, clock=clock, sleep=sleep)
        if block_seconds <= 0:
            raise ValueError("block_seconds must be positive")
        self._reserve = reserve
        self._block_units = 0.0 if rate is None else rate * block_seconds
        self._block_end = clock()  # end of the block this process holds (local clock)
        self.reservations = 0  # database round trips so far

    def acquire(self, units: int) -> float:
        """Block until ``units`` may be sent within a block this process booked; seconds waited."""
        if self.rate is None or units <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if start + units / self.rate > self._block_end + _EPSILON:
                booked = float(units * max(1, round(self._block_units / units)))
                try:
                    delay = self._reserve(booked)
                except StoreError as exc:  # the database is away (send.backlog holds on)
                    log.warning("cannot book the shared rate (%s): keeping to it locally", exc)
                    delay = 0.0
                self.reservations += 1
                start = self._clock() + max(0.0, delay)
                self._block_end = start + booked / self.rate
            self._next = start + units / self.rate
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return max(0.0, delay)


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
