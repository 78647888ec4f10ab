"""How many requests to keep in flight: a fixed number, or found as the run goes (``auto``).

:class:`Aimd` is ``--concurrency auto``: additive increase, multiplicative decrease, decided once
per *window* (one smoothed round trip, at least ``min_window`` seconds), from what the requests
of that window saw:

* the gateway pushed back (ERR 130, HTTP 429 or 503: :func:`is_pushback`): ``limit × backoff``
  (halved);
* the round trip rose: the window's mean round trip is over ``baseline × tolerance + slack``,
  where ``baseline`` is the lowest round trip of the last ``baseline_windows`` windows (the
  path's own latency, without queueing): ``limit × latency_backoff``. More in flight bought no
  throughput, only a queue (Little's law: at a fixed rate, the round trip grows with the load);
* the limit held requests back (chunks waited for a slot) and the rate did not: grow. At first
  the limit doubles each window (a slow start, so that a 200 ms gateway is filled in about a
  second); after the first decrease it grows by ``√limit`` per window (additive: it does not
  compound within a window);
* otherwise the limit stays: the coordinator does not hand over chunks faster (a limit that
  does not bind tells nothing, and growing it would only let a burst out later), or ``--rate``
  holds them (the window's requests waited for the rate limiter, on average, more than
  ``rate_share`` of a round trip: more in flight would only wait longer).

After a decrease, the next window is only watched (its requests were mostly sent under the old
limit). The rate limiter, not this controller, keeps the account's ``--rate``: whatever the
limit, no request leaves before its slot. The arithmetic is pure (a clock is passed in), so it
is tested without a network (tests/unit/test_adaptive.py).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from batch_sender.config import AUTO_CONCURRENCY, MAX_CONCURRENCY
from batch_sender.errors import ServerBusy
from batch_sender.send import policy
from batch_sender.send.policy import Action

__all__ = [
    "AUTO",
    "MAX_CONCURRENCY",
    "Aimd",
    "AimdSettings",
    "Fixed",
    "Limit",
    "is_pushback",
    "limit_for",
]

AUTO = AUTO_CONCURRENCY


def is_pushback(exc: BaseException) -> bool:
    """Whether a request's error is the gateway saying "slower": ERR 130 (a pause) or an HTTP
    status it retries because the server did not process the request (429, 503). What is
    retried and why stays ``policy.decide``'s; this only reads its answer."""
    decision = policy.decide(exc)
    return decision.action is Action.PAUSE or (
        decision.action is Action.RETRY and isinstance(exc, ServerBusy)
    )


class Limit(Protocol):
    """What the dispatcher asks and tells of a concurrency limit."""

    @property
    def limit(self) -> int: ...

    def observe(self, rtt: float, *, binding: bool) -> None:
        """A request answered after ``rtt`` seconds; ``binding``: chunks waited for a slot."""

    def pushback(self) -> None:
        """The gateway pushed back (ERR 130, 429, 503)."""

    def rate_bound(self, delay: float) -> None:
        """A request waited ``delay`` seconds for the rate limiter."""


class Fixed:
    """``--concurrency N``: always ``N``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def observe(self, rtt: float, *, binding: bool) -> None:
        pass

    def pushback(self) -> None:
        pass

    def rate_bound(self, delay: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class AimdSettings:
    start: int = 8  # requests in flight at first
    minimum: int = 1
    maximum: int = MAX_CONCURRENCY
    backoff: float = 0.5  # × on the gateway's pushback
    latency_backoff: float = 0.8  # × when the round trip rises
    tolerance: float = 1.5  # the round trip "rose": mean > baseline × tolerance + slack
    slack: float = 0.005  # seconds (on loopback a round trip is a fraction of a millisecond)
    min_window: float = 0.1  # seconds: the shortest window
    baseline_windows: int = 50  # the baseline is the lowest round trip of this many windows
    #: rate-bound: the mean wait for the rate limiter is over this share of the mean round trip
    rate_share: float = 0.1


class Aimd:
    """``--concurrency auto``: see the module docstring."""

    def __init__(
        self, settings: AimdSettings | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = s = settings or AimdSettings()
        if not 1 <= s.minimum <= s.start <= s.maximum:
            raise ValueError("need 1 <= minimum <= start <= maximum")
        self._clock = clock
        self._limit = s.start
        self.slow_start = True
        self._cooling = False  # the window after a decrease: watched, not acted on
        self._lows: deque[float] = deque(maxlen=s.baseline_windows)
        self._srtt: float | None = None
        self._started = 0.0
        self._count = 0
        self._total = 0.0
        self._low = math.inf
        self._binding = 0
        self._pushed = False
        self._rate_waits = 0.0
        self._open(clock())

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def baseline(self) -> float | None:
        """The lowest round trip seen over the recent windows (seconds), if any."""
        lows = [*self._lows, self._low] if self._count else list(self._lows)
        return min(lows) if lows else None

    def observe(self, rtt: float, *, binding: bool) -> None:
        self._count += 1
        self._total += rtt
        self._low = min(self._low, rtt)
        self._binding += binding
        self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt
        self._tick()

    def pushback(self) -> None:
        self._pushed = True
        self._tick()

    def rate_bound(self, delay: float) -> None:
        self._rate_waits += delay

    def _open(self, now: float) -> None:
        self._started = now
        self._count = 0
        self._total = 0.0
        self._low = math.inf
        self._binding = 0
        self._pushed = False
        self._rate_waits = 0.0

    def _tick(self) -> None:
        now = self._clock()
        window = max(self.settings.min_window, self._srtt or 0.0)
        if now - self._started >= window and (self._count or self._pushed):
            self._decide()
            self._open(now)

    def _decide(self) -> None:
        """Close the window: the new limit from what its requests saw."""
        s = self.settings
        if self._count:
            baseline = self.baseline
            self._lows.append(self._low)
        else:
            baseline = None
        if self._cooling:
            self._cooling = False
            return
        mean = self._total / self._count if self._count else None
        if self._pushed:
            self._decrease(s.backoff)
        elif mean is not None and baseline is not None and mean > baseline * s.tolerance + s.slack:
            self._decrease(s.latency_backoff)
        elif (
            mean is None
            or self._binding * 2 < self._count
            or self._rate_waits / self._count > s.rate_share * mean
        ):
            return  # the limit did not hold the run back: nothing to learn from this window
        elif self.slow_start:
            self._limit = min(s.maximum, self._limit * 2)
        else:
            self._limit = min(s.maximum, self._limit + max(1, round(math.sqrt(self._limit))))

    def _decrease(self, factor: float) -> None:
        self._limit = max(self.settings.minimum, math.floor(self._limit * factor))
        self.slow_start = False
        self._cooling = True


def limit_for(concurrency: int | str) -> Limit:
    """The limit of ``--concurrency``: :class:`Aimd` for ``auto``, else :class:`Fixed`."""
    if concurrency == AUTO:
        return Aimd()
    if isinstance(concurrency, int) and 1 <= concurrency <= MAX_CONCURRENCY:
        return Fixed(concurrency)
    raise ValueError(f"concurrency must be 1-{MAX_CONCURRENCY} or {AUTO!r}: {concurrency!r}")
