"""Hundreds of requests in flight, and ``--concurrency auto``, over real HTTP to the simulator.

The client opens a connection only when every one it holds is busy, so the simulator's peak of
open connections is the peak of requests in flight. No timing is asserted (that is the
benchmarks' business): only how many were in flight, what the limit did, and that every
recipient was sent exactly once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fixtures_cli import write_csv

from batch_sender.config import MessageOptions
from batch_sender.gateway import GatewayClient
from batch_sender.gateway.aio import AsyncGatewayClient
from batch_sender.gateway.client import Credentials
from batch_sender.send.adaptive import Aimd, AimdSettings, Fixed, Limit
from batch_sender.send.aio import AsyncCourier, Dispatcher, StopSignal
from batch_sender.send.courier import ChunkResult
from batch_sender.send.ratelimit import RateLimiter
from batch_sender.states import Status
from batch_sender.store import Chunk, ChunkRecipient, SentOutcomes

FAST = {"BATCH_SENDER_BACKOFF_SCALE": "0.01"}


@contextmanager
def peak_connections(sim) -> Iterator[list[int]]:
    """The simulator's peak of open connections while the block runs (``peak[0]``)."""
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], sim.open_connections)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def distinct_campaign(tmp_path, n: int, start: int = 27831000000):
    """``n`` recipients whose texts all differ ("Hi {name}" with a name per row)."""
    return write_csv(tmp_path / "c.csv", [(str(start + i), f"n{i}") for i in range(n)])


def sent_once(sim, n: int) -> None:
    times = Counter(m.to for m in sim.accepted)
    assert len(times) == n and max(times.values()) == 1


@pytest.mark.usefixtures("each_send_process")
def test_hundreds_of_requests_are_in_flight_at_once(bs, make_simulator, tmp_path):
    sim = make_simulator(latency_ms=300)
    csv = distinct_campaign(tmp_path, 600)
    with peak_connections(sim) as peak:
        out = bs("run", str(csv), "--text", "Hi {name}", "--concurrency", "300", "--json", sim=sim)
    assert out.exit_code == 0, out.stderr
    assert peak[0] >= 250, peak  # the thread-per-connection design stopped at 64
    sent_once(sim, 600)


@pytest.mark.usefixtures("each_send_process")
def test_auto_grows_well_past_the_old_maximum_when_the_gateway_is_far(bs, make_simulator, tmp_path):
    sim = make_simulator(latency_ms=200)
    csv = distinct_campaign(tmp_path, 1500)
    with peak_connections(sim) as peak:
        out = bs("run", str(csv), "--text", "Hi {name}", "--json", sim=sim)  # auto: the default
    assert out.exit_code == 0, out.stderr
    assert peak[0] >= 128, peak  # 8 at first: it doubled at least four times
    sent_once(sim, 1500)


def test_concurrency_is_checked(bs, simulator, tmp_path):
    csv = distinct_campaign(tmp_path, 3)
    for bad in ("0", "1025", "lots", "2.5"):
        out = bs("run", str(csv), "--text", "Hi {name}", "--concurrency", bad, sim=simulator)
        assert out.exit_code == 2, (bad, out.stderr)
        assert "--concurrency" in out.stderr
    out = bs("run", str(csv), "--text", "Hi {name}", "--concurrency", "AUTO", sim=simulator)
    assert out.exit_code == 0, out.stderr


# -- the dispatcher and its limit, driven directly ------------------------------------------------


def chunks(n: int, start: int = 27841000000) -> list[Chunk]:
    return [
        Chunk(
            campaign_id=1,
            client_message_id=os.urandom(16).hex(),
            message_id=i,
            wire_text=f"Hi {i}",
            unicode=False,
            parts=1,
            recipients=(ChunkRecipient(i, str(start + i)),),
        )
        for i in range(n)
    ]


def dispatch(sim, limit: Limit, n: int, *, rate: float | None = None):
    """Send ``n`` one-recipient chunks through a Dispatcher; (results, the limit's history)."""
    history = [limit.limit]
    results: dict[int, ChunkResult | BaseException] = {}
    client = GatewayClient(
        url=sim.url, credentials=Credentials(*sim.credentials), max_connections=4
    )

    async def main() -> None:
        signal = StopSignal(threading.Event())
        courier = AsyncCourier(
            client=AsyncGatewayClient(client, max_connections=1024),
            options=MessageOptions(),
            limiter=RateLimiter(rate),
            max_attempts=20,
            max_wait=60,
            signal=signal,
            backoff_scale=0.01,
        )
        dispatcher: Dispatcher[int] = Dispatcher(
            courier, limit, results.__setitem__, on_limit=history.append
        )
        for i, chunk in enumerate(chunks(n)):
            dispatcher.submit(i, chunk)
        assert await dispatcher.drain(120)
        signal.close()
        await courier.client.aclose()

    with client:
        asyncio.run(main())
    assert len(results) == n
    for result in results.values():
        assert isinstance(result, ChunkResult), result
        assert isinstance(result.outcomes, SentOutcomes) or all(
            o.status is Status.SENT for o in result.outcomes
        ), result
    return results, history


def halved_after_its_peak(history: list[int]) -> bool:
    """The limit came down to half of the highest it reached, or lower, after reaching it (how
    high it got first, and how many back-offs follow, depend on the machine's pace)."""
    peak = history.index(max(history))
    return min(history[peak:]) <= max(history) // 2


def test_the_dispatcher_keeps_a_fixed_limit(make_simulator):
    sim = make_simulator(latency_ms=100)
    with peak_connections(sim) as peak:
        _, history = dispatch(sim, Fixed(32), 200)
    assert history == [32]
    assert peak[0] in (32, 33)  # (and the blocking client's connection, which authenticated)
    sent_once(sim, 200)


def test_auto_backs_off_when_the_gateway_answers_err_130(make_simulator):
    """An account cap of 100 messages a second: ERR 130 pauses every courier and halves."""
    sim = make_simulator(latency_ms=20, max_mps=100)
    aimd = Aimd(AimdSettings(start=64))
    _, history = dispatch(sim, aimd, 300)
    assert halved_after_its_peak(history), history
    assert not aimd.slow_start
    sent_once(sim, 300)


def test_auto_backs_off_on_http_429_and_503(make_simulator):
    sim = make_simulator(latency_ms=20)
    sim.gateway.inject("http_429", times=5, retry_after=0)
    sim.gateway.inject("http_503", times=5, retry_after=0)
    aimd = Aimd(AimdSettings(start=64))
    _, history = dispatch(sim, aimd, 400)
    assert halved_after_its_peak(history), history
    sent_once(sim, 400)


def test_auto_never_sends_faster_than_the_rate(make_simulator, tmp_path):
    """--rate holds whatever the limit: the limit stays put while the rate limiter binds."""
    sim = make_simulator(latency_ms=50)
    aimd = Aimd(AimdSettings(start=8))
    _, history = dispatch(sim, aimd, 100, rate=100.0)
    times = sorted(m.time for m in sim.accepted)
    span = times[-1] - times[0]
    # 100 messages at 100/s leave over 0.99 s; the answers' jitter on a busy machine is the slack
    assert span >= 0.9
    assert max(history) <= 16, history  # a rate-bound window does not grow it
