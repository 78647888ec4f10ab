"""The sending policy's parts: rate limiter, ERR 130 pause gate, retry policy, outcome mapping."""

from __future__ import annotations

import json
import pickle
import threading

import pytest

from batch_sender.errors import (
    InternalGatewayError,
    OutcomeUnknown,
    ProtocolError,
    RequestRejected,
    RunStopped,
    ServerBusy,
    SessionExpired,
    SoapFault,
    Throttled,
    TransportError,
)
from batch_sender.gateway import Receipt
from batch_sender.send import policy as retry
from batch_sender.send.coordinator import outcomes_for
from batch_sender.send.policy import Action
from batch_sender.send.ratelimit import PauseGate, RateLimiter
from batch_sender.states import Status
from batch_sender.store import Chunk, ChunkRecipient, SentOutcomes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_spaces_requests_by_their_parts():
    clock = FakeClock()
    limiter = RateLimiter(100.0, clock=clock, sleep=clock.sleep)
    waits = [limiter.acquire(50) for _ in range(5)]
    # first goes at once; each later one waits for the previous one's 50 units at 100/s
    assert waits == pytest.approx([0.0, 0.5, 0.5, 0.5, 0.5])
    assert clock.now == pytest.approx(1002.0)


def test_rate_limiter_long_run_rate_is_exact_across_threads():
    clock = FakeClock()
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            pass  # every thread reserves its own slot; the clock only moves forward

    limiter = RateLimiter(500.0, clock=clock, sleep=sleep)
    threads = [
        threading.Thread(target=lambda: [limiter.acquire(100) for _ in range(50)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 4 × 50 × 100 units at 500/s reserve exactly 40 s of schedule
    assert limiter._next - 1000.0 == pytest.approx(40.0)


def test_rate_limiter_without_rate_never_waits():
    assert RateLimiter(None).acquire(10_000) == 0.0


def test_pause_gate_holds_until_the_named_second():
    clock = FakeClock()
    gate = PauseGate(clock=clock)
    assert gate.remaining() == 0
    gate.pause_until(1010.0)
    gate.pause_until(1005.0)  # an earlier end never shortens the pause
    assert gate.remaining() == pytest.approx(10.0)


def _attempts(errors: list[Exception], *, max_attempts: int = 6) -> tuple[int, list[float]]:
    slept: list[float] = []
    calls = 0

    def call() -> str:
        nonlocal calls
        calls += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    policy = retry.policy(
        max_attempts=max_attempts, stop_event=threading.Event(), sleep=slept.append
    )
    policy(call)
    return calls, slept


def test_retryable_errors_are_retried_with_growing_jittered_backoff():
    calls, slept = _attempts(
        [TransportError("refused"), ServerBusy("503", status=503), TransportError("refused")]
    )
    assert calls == 4
    assert len(slept) == 3
    assert slept[0] <= retry.INITIAL_BACKOFF + retry.JITTER
    assert slept[2] >= 4 * retry.INITIAL_BACKOFF  # exponential: 0.5, 1, 2 (+ jitter)


def test_retry_after_is_honoured():
    _, slept = _attempts([ServerBusy("429", status=429, retry_after=7.0)])
    assert slept == [pytest.approx(7.0, abs=retry.JITTER)]
    assert slept[0] >= 7.0


@pytest.mark.parametrize(
    "exc",
    [OutcomeUnknown("read timeout"), RequestRejected("113"), RunStopped("001")],
)
def test_non_retryable_errors_are_raised_at_once(exc):
    with pytest.raises(type(exc)):
        _attempts([exc])


def test_retries_stop_after_max_attempts():
    with pytest.raises(TransportError):
        _attempts([TransportError("x") for _ in range(10)], max_attempts=3)


def test_a_stopping_run_does_not_retry():
    stop = threading.Event()
    stop.set()
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        raise TransportError("refused")

    with pytest.raises(TransportError):
        retry.policy(max_attempts=6, stop_event=stop, sleep=lambda s: None)(call)
    assert calls == 1


CHUNK = Chunk(
    campaign_id=1,
    client_message_id="c" * 32,
    message_id=1,
    wire_text="Hi",
    unicode=False,
    parts=1,
    recipients=(
        ChunkRecipient(1, "27820000001"),
        ChunkRecipient(2, "27820000002"),
        ChunkRecipient(3, "27820000003"),
        ChunkRecipient(4, "27820000004"),
    ),
)


def test_outcomes_map_each_return_to_its_number():
    result = outcomes_for(
        CHUNK,
        [
            Receipt("27820000002", "b" * 32, None, None),
            Receipt("27820000001", "a" * 32, None, None),
            Receipt("27820000003", None, "121", "Destination mobile number blocked"),
            Receipt("27820000004", None, "301", "No credit left"),
        ],
    )
    by_id = {o.recipient_id: o for o in result.outcomes}
    assert by_id[1].status is Status.SENT and by_id[1].api_message_id == "a" * 32
    assert by_id[2].api_message_id == "b" * 32
    assert by_id[3].status is Status.FAILED and by_id[3].error_code == "121"
    assert 4 not in by_id and result.release == (4,)  # no credit: back to pending
    assert isinstance(result.stop, RunStopped)


def test_an_answer_accepting_every_number_comes_packed_for_the_store():
    """The usual answer travels (pickled, from a sending process) as one JSON text of the
    accepted rows: what the store's UPDATE reads. An answer with any other outcome does not."""
    receipts = [Receipt(f"2782000000{i}", f"{i}" * 32, None, None) for i in (4, 2, 1, 3)]

    result = outcomes_for(CHUNK, receipts)

    assert isinstance(result.outcomes, SentOutcomes)
    width = 32  # the protocol's IDs are 32 hex digits
    assert json.loads(result.outcomes.packed) == {str(i): str(i) * width for i in (4, 2, 1, 3)}
    wire = pickle.dumps(result.outcomes)
    assert b"states" not in wire  # no Outcome (nor its Status) per recipient: the text alone
    assert pickle.loads(wire).packed == result.outcomes.packed
    assert len(result.outcomes) == 4  # without unpacking
    assert {o.recipient_id: (o.status, o.api_message_id) for o in result.outcomes} == {
        i: (Status.SENT, str(i) * width) for i in (1, 2, 3, 4)
    }
    mixed = outcomes_for(CHUNK, receipts[:3] + [Receipt("27820000003", None, "121", "blocked")])
    assert not isinstance(mixed.outcomes, SentOutcomes)
    assert sorted(o.status for o in mixed.outcomes) == sorted(["sent"] * 3 + ["failed"])


@pytest.mark.parametrize("bad", ["42", "a" * 40, "z" * 32, "a" * 31])
def test_an_id_that_is_not_32_hex_is_unknown_never_sent(bad):
    receipts = [Receipt(f"2782000000{i}", "c" * 32, None, None) for i in (1, 2, 3)]
    receipts.append(Receipt("27820000004", bad, None, None))
    result = outcomes_for(CHUNK, receipts)
    by_id = {o.recipient_id: o for o in result.outcomes}
    assert by_id[4].status is Status.UNKNOWN
    assert "malformed message ID" in (by_id[4].error_description or "")
    assert [by_id[i].status for i in (1, 2, 3)] == [Status.SENT] * 3


def test_a_number_the_answer_omits_is_unknown_not_lost():
    result = outcomes_for(CHUNK, [Receipt("27820000001", "a" * 32, None, None)])
    statuses = {o.recipient_id: o.status for o in result.outcomes}
    assert statuses == {1: Status.SENT, 2: Status.UNKNOWN, 3: Status.UNKNOWN, 4: Status.UNKNOWN}


def test_err_130_mid_list_releases_and_pauses():
    result = outcomes_for(
        CHUNK,
        [Receipt("27820000001", "a" * 32, None, None)]
        + [
            Receipt(f"2782000000{i}", None, "130", "Maximum MT limit exceeded until 1764072000")
            for i in (2, 3, 4)
        ],
    )
    assert result.release == (2, 3, 4)
    assert result.pause_until == 1764072000.0
    assert result.stop is None


# the one decision rule, branch by branch (DESIGN.md §3)
@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (TransportError("connect refused"), Action.RETRY),
        (ServerBusy("busy", status=503), Action.RETRY),
        (ServerBusy("slow down", status=429), Action.RETRY),
        (ServerBusy("error page", status=500), Action.UNKNOWN),
        (ServerBusy("bad gateway", status=502), Action.UNKNOWN),
        (ServerBusy("gateway timeout", status=504), Action.UNKNOWN),
        (SoapFault("fault"), Action.RETRY),
        (InternalGatewayError("ERR 901"), Action.RETRY),
        (SessionExpired("ERR 003"), Action.RETRY),
        (Throttled("ERR 130", until=123.0), Action.PAUSE),
        (OutcomeUnknown("read timeout"), Action.UNKNOWN),
        (ProtocolError("garbage"), Action.UNKNOWN),
        (RequestRejected("ERR 113"), Action.FAIL),
        (RunStopped("ERR 301"), Action.STOP),
        (RuntimeError("a bug"), Action.UNKNOWN),
    ],
)
def test_decide_maps_each_error_class_to_one_action(exc, action):
    decision = retry.decide(exc)
    assert decision.action is action
    assert decision.reason
    assert retry.is_retryable(exc) is (action is Action.RETRY)


def test_a_pause_carries_the_second_it_ends():
    assert retry.decide(Throttled("ERR 130", until=1764072000.0)).until == 1764072000.0


@pytest.mark.parametrize(
    ("code", "action"),
    [
        ("301", Action.STOP),
        ("001", Action.STOP),
        ("130", Action.PAUSE),
        ("003", Action.RETRY),
        ("901", Action.RETRY),
        ("105", Action.FAIL),
        ("114", Action.FAIL),
    ],
)
def test_decide_code_reads_a_per_number_code_by_the_same_rule(code, action):
    assert retry.decide_code(code, "until 1764072000").action is action
