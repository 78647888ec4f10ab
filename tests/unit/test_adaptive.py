"""``--concurrency auto``'s arithmetic (send/adaptive.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from batch_sender.errors import (
    OutcomeUnknown,
    ServerBusy,
    SessionExpired,
    Throttled,
    TransportError,
)
from batch_sender.send.adaptive import AUTO, Aimd, AimdSettings, Fixed, is_pushback, limit_for


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def window(aimd: Aimd, clock: Clock, rtt: float, *, n: int = 10, binding: bool = True) -> int:
    """One window of ``n`` answers after ``rtt`` seconds each; the limit after it."""
    for _ in range(n):
        aimd.observe(rtt, binding=binding)
    clock.now += max(rtt, aimd.settings.min_window) * 1.01
    aimd.observe(rtt, binding=binding)  # the first answer past the window closes it
    return aimd.limit


def test_slow_start_doubles_each_window_while_the_round_trip_holds():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    limits = [window(aimd, clock, 0.2) for _ in range(5)]
    assert limits == [16, 32, 64, 128, 256]
    assert aimd.slow_start


def test_it_never_passes_the_maximum():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8, maximum=100), clock=clock)
    for _ in range(10):
        window(aimd, clock, 0.2)
    assert aimd.limit == 100


def test_a_limit_that_does_not_bind_does_not_grow():
    """The coordinator hands over fewer chunks than the limit allows: nothing to learn."""
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    for _ in range(5):
        window(aimd, clock, 0.2, binding=False)
    assert aimd.limit == 8


def test_a_rate_limited_run_holds_its_limit():
    """Requests that wait for --rate over a tenth of a round trip: more in flight would wait."""
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    for _ in range(5):
        for _ in range(11):
            aimd.rate_bound(0.03)  # 30 ms each, of a 200 ms round trip
        window(aimd, clock, 0.2)
    assert aimd.limit == 8


def test_the_rate_limiters_spacing_of_a_burst_is_not_a_bound():
    """A burst of 8 at --rate 800 leaves 1.25 ms apart: waits of a few ms, not a bound."""
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    for _ in range(3):
        for i in range(11):
            aimd.rate_bound(i * 0.00125)
        window(aimd, clock, 0.2)
    assert aimd.limit == 64


def test_pushback_halves_then_the_next_window_is_only_watched_then_growth_is_additive():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=64), clock=clock)
    aimd.pushback()
    assert window(aimd, clock, 0.2) == 32  # the window with the pushback
    assert not aimd.slow_start
    assert window(aimd, clock, 0.2) == 32  # cooling: sent mostly under the old limit
    assert window(aimd, clock, 0.2) == 32 + 6  # + round(sqrt(32))
    assert window(aimd, clock, 0.2) == 38 + 6


def test_a_burst_of_pushbacks_in_one_window_halves_once():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=64), clock=clock)
    for _ in range(50):
        aimd.pushback()
        aimd.observe(0.2, binding=True)
    assert aimd.limit in (64, 32)
    clock.now += 0.2
    aimd.pushback()
    assert aimd.limit == 32


def test_a_rising_round_trip_backs_off_by_a_fifth():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    for _ in range(4):
        window(aimd, clock, 0.2)
    assert aimd.limit == 128
    # 0.2 s is the baseline; 0.35 s is over 0.2 × 1.5 + 0.005
    assert window(aimd, clock, 0.35) == int(128 * 0.8)
    assert not aimd.slow_start


def test_a_round_trip_within_the_tolerance_is_no_rise():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    window(aimd, clock, 0.2)
    assert window(aimd, clock, 0.29) == 32  # under 0.305: still growing


def test_the_slack_keeps_loopback_jitter_from_reading_as_a_rise():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8), clock=clock)
    window(aimd, clock, 0.0005)
    assert window(aimd, clock, 0.004) == 32  # 8× the baseline, but within 5 ms


def test_it_never_goes_below_the_minimum():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=2, minimum=1), clock=clock)
    for _ in range(6):
        aimd.pushback()
        window(aimd, clock, 0.1)
    assert aimd.limit == 1


def test_the_window_is_one_smoothed_round_trip_at_least():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8, min_window=0.1), clock=clock)
    for _ in range(20):
        aimd.observe(1.0, binding=True)
    clock.now += 0.5  # half a round trip: the window is still open
    aimd.observe(1.0, binding=True)
    assert aimd.limit == 8
    clock.now += 0.6
    aimd.observe(1.0, binding=True)
    assert aimd.limit == 16


def test_the_baseline_is_the_lowest_round_trip_of_recent_windows():
    clock = Clock()
    aimd = Aimd(AimdSettings(start=8, baseline_windows=3), clock=clock)
    for rtt in (0.1, 0.2, 0.2, 0.2):
        window(aimd, clock, rtt, binding=False)
    assert aimd.baseline == pytest.approx(0.2)  # the 0.1 s window has left the memory


@pytest.mark.parametrize(
    ("exc", "pushback"),
    [
        (Throttled("ERR 130", until=0.0), True),
        (ServerBusy("429", status=429), True),
        (ServerBusy("503", status=503), True),
        (ServerBusy("500", status=500), False),  # not a "slower": the outcome is unknown
        (ServerBusy("502", status=502), False),
        (TransportError("refused"), False),
        (OutcomeUnknown("read timeout"), False),
        (SessionExpired("003", code="003"), False),
    ],
)
def test_pushback_is_err_130_429_and_503_only(exc, pushback):
    assert is_pushback(exc) is pushback


def test_limit_for_reads_the_option():
    assert isinstance(limit_for(AUTO), Aimd)
    fixed = limit_for(256)
    assert isinstance(fixed, Fixed) and fixed.limit == 256
    fixed.pushback()
    fixed.observe(9.0, binding=True)
    fixed.rate_bound(1.0)
    assert fixed.limit == 256
    with pytest.raises(ValueError):
        limit_for(0)
    with pytest.raises(ValueError):
        limit_for(1025)
