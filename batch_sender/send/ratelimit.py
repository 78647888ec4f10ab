"""An account-wide send rate, in message parts per second, shared by every worker thread.

Gateways throttle parts, not requests, so a request of 100 recipients of a 2-part text costs 200.
The limiter is a virtual schedule (GCRA): each request reserves the next free slot and waits for
it, so the long-run rate is exact and a burst never exceeds one request.

:class:`SharedRateLimiter` keeps the same schedule for many processes on many machines: the
schedule lives in the database (``Store.reserve_rate``) and each process reserves a slice of
tokens at a time (a fraction of a second of its own throughput), then hands them out locally to
its threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from batch_sender.errors import StoreError

log = logging.getLogger(__name__)

__all__ = ["RESERVE_SECONDS", "PauseGate", "RateLimiter", "SharedRateLimiter"]

RESERVE_SECONDS = 0.25  # seconds of the account's rate a worker reserves per database round trip
_EPSILON = 1e-9  # seconds: float slack when checking that a request fits its tokens
_THROUGHPUT_WINDOW = 1.0  # seconds of recent sends that size the next slice
_BOOKING_WAIT = 0.5  # seconds a thread waits for another's booking before looking again


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
    booked slice starts (``Store.reserve_rate`` bound to an account and rate). A booked slice is
    a number of **tokens** this process may spend from its start on, at its own pace (never
    faster than ``rate`` locally), until it **expires** ``block_seconds`` after the slice's own
    span (``units / rate``) has ended; what is left then is given up. Slices are sized to this
    process's throughput over the last second (``block_seconds`` of it, a whole number of its
    requests, at most ``rate × block_seconds``), so a process that sends 250 of the 1,000 parts
    per second books about 60 at a time, four round trips a second, and gives up little.

    Booked slices never overlap on the shared schedule, so the processes together are granted
    ``rate`` per second; as each spends a slice within its span plus ``block_seconds``, what they
    send over any window of ``W`` seconds stays within ``rate × (W + block_seconds)`` plus one
    slice per process. (Before, a slice was a block of *time* in which this process had to send
    at the full account rate: a worker that could not — four workers with eight requests in
    flight at 20 ms, 400/s each — wasted most of each block, and the four together reached a
    fraction of ``rate``.) One thread books at a time, outside the lock: the others go on
    spending what is left meanwhile. Tokens a process leaves unused (it fell behind, finished,
    or died) are lost: throughput, never the limit. ``rate=None`` never waits and never reserves.
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
        self._block_seconds = block_seconds
        self._block_units = 0.0 if rate is None else rate * block_seconds
        self._tokens = 0.0  # booked and not spent yet
        self._expires = clock()  # when the tokens left are given up (local clock)
        self._booking = False  # a thread is reserving right now (outside the lock)
        self._booked = threading.Condition(self._lock)
        self._spent: deque[tuple[float, int]] = deque()  # (when, units) over the last second
        self._spent_units = 0
        self._first = clock()
        self.reservations = 0  # database round trips so far
        self.expired = 0.0  # tokens given up unused

    def _slice(self, units: int, now: float) -> float:
        """How many units to book next: ``block_seconds`` of this process's recent throughput,
        a whole number of ``units``-sized requests, at most ``rate × block_seconds``."""
        while self._spent and self._spent[0][0] < now - _THROUGHPUT_WINDOW:
            self._spent_units -= self._spent.popleft()[1]
        seconds = max(self._block_seconds, min(_THROUGHPUT_WINDOW, now - self._first))
        wanted = min(self._block_units, self._spent_units / seconds * self._block_seconds)
        if not self._spent:  # nothing sent lately: start with a whole block
            wanted = self._block_units
        return float(units * max(1, round(wanted / units)))

    def acquire(self, units: int) -> float:
        """Block until ``units`` may be sent with tokens this process booked; seconds waited."""
        if self.rate is None or units <= 0:
            return 0.0
        rate = self.rate
        with self._booked:
            now = self._clock()
            while True:
                at = self._clock()
                if at > self._expires and self._tokens > 0:
                    self.expired += self._tokens
                    self._tokens = 0.0
                if self._tokens + _EPSILON * rate >= units:
                    break
                if self._booking:  # another thread is booking: wait for its slice
                    self._booked.wait(_BOOKING_WAIT)
                    continue
                size = self._slice(units, at)
                self._booking = True
                self._lock.release()
                try:
                    delay = self._reserve(size)
                except StoreError as exc:  # the database is away (send.backlog holds on)
                    log.warning("cannot book the shared rate (%s): keeping to it locally", exc)
                    delay = 0.0
                finally:
                    self._lock.acquire()
                    self._booking = False
                    self._booked.notify_all()
                self.reservations += 1
                begins = self._clock() + max(0.0, delay)
                if self._clock() > self._expires:
                    self.expired += self._tokens
                    self._tokens = 0.0
                self._tokens += size
                self._expires = begins + size / rate + self._block_seconds
                self._next = max(self._next, begins)
            self._tokens -= units
            start = max(at, self._next)
            self._next = start + units / rate
            self._spent.append((at, units))
            self._spent_units += units
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
