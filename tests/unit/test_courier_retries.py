"""Both couriers' retries: the first request leaves without tenacity, and after a failure that
is retried everything is as tenacity decides (the same attempts, the same waits)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from batch_sender.config import MessageOptions
from batch_sender.errors import (
    GatewayError,
    OutcomeUnknown,
    RunStopped,
    ServerBusy,
    TransportError,
)
from batch_sender.gateway import Message, Receipt
from batch_sender.send import policy
from batch_sender.send.aio import AsyncCourier, StopSignal
from batch_sender.send.courier import ChunkResult, Courier
from batch_sender.send.ratelimit import RateLimiter
from batch_sender.states import Status
from batch_sender.store import Chunk, ChunkRecipient

NUMBER = "27821000001"
CHUNK = Chunk(campaign_id=1, client_message_id="c" * 32, message_id=1, wire_text="Hi",
              unicode=False, parts=1, recipients=(ChunkRecipient(7, NUMBER),))  # fmt: skip


Sent = tuple[ChunkResult, int, list[float]]  # the result, the requests made, the waits slept


class _Gateway:
    """Raises ``errors`` in turn, then accepts; counts the requests."""

    def __init__(self, errors: Sequence[GatewayError]) -> None:
        self.errors = list(errors)
        self.requests = 0

    def answer(self) -> list[Receipt]:
        self.requests += 1
        if self.errors:
            raise self.errors.pop(0)
        return [Receipt(NUMBER, "a" * 32, None, None)]

    def sendmsg(self, to: Sequence[str], message: Message, *, climsgid: str | None = None) -> Any:
        return self.answer()


class _AsyncGateway(_Gateway):
    async def sendmsg(  # type: ignore[override]
        self, to: Sequence[str], message: Message, *, climsgid: str | None = None
    ) -> list[Receipt]:
        return self.answer()


def _sync(errors: Sequence[GatewayError], max_attempts: int) -> Sent:
    gateway = _Gateway(errors)
    slept: list[float] = []
    courier = Courier(client=gateway, options=MessageOptions(), limiter=RateLimiter(None),  # type: ignore[arg-type]
                      max_attempts=max_attempts, max_wait=60.0, stop=threading.Event(),
                      sleep=slept.append)  # fmt: skip
    return courier.send(CHUNK), gateway.requests, slept


def _async(errors: Sequence[GatewayError], max_attempts: int) -> Sent:
    gateway = _AsyncGateway(errors)
    slept: list[float] = []

    async def main() -> ChunkResult:
        signal = StopSignal(threading.Event())

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        signal.sleep = sleep  # type: ignore[method-assign]
        courier = AsyncCourier(client=gateway, options=MessageOptions(), limiter=RateLimiter(None),  # type: ignore[arg-type]
                               max_attempts=max_attempts, max_wait=60.0, signal=signal)  # fmt: skip
        try:
            return await courier.send(CHUNK)
        finally:
            signal.close()

    return asyncio.run(main()), gateway.requests, slept


def _policy_waits(errors: Sequence[GatewayError], max_attempts: int) -> tuple[int, list[float]]:
    """What tenacity alone does with the same failures: the calls and the waits."""
    left = list(errors)
    calls = 0
    slept: list[float] = []

    def call() -> None:
        nonlocal calls
        calls += 1
        if left:
            raise left.pop(0)

    retrying = policy.policy(max_attempts=max_attempts, stop_event=threading.Event(),
                             sleep=slept.append)  # fmt: skip
    with contextlib.suppress(GatewayError):
        retrying(call)
    return calls, slept


couriers = pytest.mark.parametrize("send", [_sync, _async], ids=["threads", "event loop"])


@couriers
def test_a_first_request_that_is_answered_never_sets_up_tenacity(send, monkeypatch):
    def refused(**kwargs: Any) -> Any:
        raise AssertionError("tenacity set up for a request that needed no retry")

    monkeypatch.setattr(policy, "policy", refused)
    monkeypatch.setattr(policy, "async_policy", refused)

    result, requests, slept = send([], max_attempts=6)

    assert (requests, result.requests, slept) == (1, 1, [])
    assert [(o.recipient_id, o.status) for o in result.outcomes] == [(7, Status.SENT)]


@couriers
@pytest.mark.parametrize(
    "errors",
    [
        [ServerBusy("503", status=503)],
        [TransportError("refused"), ServerBusy("503", status=503), TransportError("refused")],
        [ServerBusy("429", status=429, retry_after=7.0), TransportError("refused")],
    ],
    ids=["one", "three", "retry-after"],
)
def test_after_a_retried_failure_the_attempts_and_waits_are_tenacitys(send, errors):
    random.seed(19)
    expected_calls, expected_waits = _policy_waits(errors, max_attempts=6)
    random.seed(19)

    result, requests, slept = send(errors, max_attempts=6)

    assert requests == result.requests == expected_calls == len(errors) + 1
    assert slept == expected_waits
    assert [o.status for o in result.outcomes] == [Status.SENT]


@couriers
def test_retries_that_run_out_stop_the_run_and_hand_the_row_back(send):
    errors = [ServerBusy("503", status=503)] * 3
    random.seed(19)
    _, expected_waits = _policy_waits(errors, max_attempts=3)
    random.seed(19)

    result, requests, slept = send(errors, max_attempts=3)

    assert requests == result.requests == 3
    assert slept == expected_waits and len(slept) == 2
    assert result.release == (7,) and not result.outcomes
    assert isinstance(result.stop, RunStopped)


@couriers
def test_a_request_that_may_have_been_taken_is_never_sent_again(send):
    result, requests, slept = send([OutcomeUnknown("read timeout")], max_attempts=6)

    assert (requests, result.requests, slept) == (1, 1, [])
    assert [o.status for o in result.outcomes] == [Status.UNKNOWN]
    assert result.release == () and result.stop is None


@couriers
def test_one_attempt_allowed_means_no_retry(send):
    result, requests, slept = send([TransportError("refused")], max_attempts=1)

    assert (requests, slept) == (1, [])
    assert result.release == (7,) and isinstance(result.stop, RunStopped)
