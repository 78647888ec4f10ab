"""Never twice, never lost: each gateway fault over real HTTP, with the ledger checked both ways.

Every test runs `batch-sender run` against the simulator with a fault injected, then compares the
simulator's --record file (what the gateway accepted) with the `results` table (what we believe):
every recipient in exactly one final or `unknown` state, no number accepted twice, no accepted
number left `pending`/`failed`, no `sent` row the gateway never accepted.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv

from batch_sender.errors import OutcomeUnknown, ServerBusy, SessionExpired
from batch_sender.send import policy as retry
from batch_sender.send.adaptive import AimdSettings

#: retry waits at 1% (0.005 s first backoff): the policy runs, the suite does not sleep
SCALE = "BATCH_SENDER_BACKOFF_SCALE"
FAST = {SCALE: "0.01"}
FINAL = {"sent", "failed", "unknown"}

#: every fault, with requests sent from threads and from a sending process of their own
pytestmark = pytest.mark.usefixtures("each_send_process")


def results(db: Path, campaign: str | None = None) -> list[dict[str, Any]]:
    """The `results` view, read with plain SQL as an operator would."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    sql, args = "SELECT * FROM results", ()
    if campaign is not None:
        sql, args = sql + " WHERE campaign = ?", (campaign,)
    rows = [dict(r) for r in con.execute(sql + " ORDER BY row_no", args)]
    con.close()
    return rows


def records(path: Path) -> list[dict[str, Any]]:
    """What the simulator accepted, one dict per message, from its --record file."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def numbers(n: int, start: int = 27821000000) -> list[str]:
    return [str(start + i) for i in range(n)]


def check_ledger(
    rows: list[dict[str, Any]], accepted: list[dict[str, Any]], *, allowed: set[str] = FINAL
) -> dict[str, int]:
    """Assert the two ledgers agree; return the figures (rows, per status, duplicates, lost)."""
    by_number = Counter(r["msisdn"] for r in rows)
    assert max(by_number.values(), default=1) == 1, "a recipient has two rows"
    times = Counter(rec["to"] for rec in accepted)
    duplicates = sum(n - 1 for n in times.values())
    assert duplicates == 0, f"accepted twice: {[m for m, n in times.items() if n > 1][:5]}"
    status = {r["msisdn"]: r["status"] for r in rows}
    ids = {r["msisdn"]: r["api_message_id"] for r in rows}
    assert set(status.values()) <= allowed, Counter(status.values())
    # lost: accepted by the gateway but `pending`/`failed` here (`sending` only while a killed
    # run's rows await settling), or `sent` here but never accepted
    lost_accepted = [m for m in times if status.get(m) not in ("sent", "unknown", "sending")]
    lost_sent = [m for m, s in status.items() if s == "sent" and m not in times]
    assert not lost_accepted, f"accepted but recorded otherwise: {lost_accepted[:5]}"
    assert not lost_sent, f"recorded sent but never accepted: {lost_sent[:5]}"
    for rec in accepted:  # an ID we recorded is the one the gateway gave
        assert ids[rec["to"]] in (None, rec["api_message_id"])
    return {"rows": len(rows), **Counter(status.values()), "duplicates": 0, "lost": 0}


@pytest.fixture
def campaign(tmp_path: Path):
    """Factory: a CSV of ``n`` distinct numbers, returned as its path."""

    def make(n: int) -> str:
        return str(write_csv(tmp_path / "c.csv", [(m, f"N{i}") for i, m in enumerate(numbers(n))]))

    return make


def run(bs, sim, src: str, *extra: str, name: str = "f") -> Any:
    return bs("run", src, "--text", "Hello", "--name", name, *extra, sim=sim, env=FAST)


def ledger(tmp_path: Path, sim: Any, **kw: Any) -> dict[str, int]:
    figures = check_ledger(results(tmp_path / "results.db"), records(Path(sim.config.record)), **kw)
    print(f"ledger: {figures} requests={sim.requests}")  # shown with -s: docs/RELIABILITY.md
    return figures


# --- retried: the request provably did not take effect -------------------------------------


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("http_503", {"retry_after": 0}),
        ("soap_fault", {}),
        ("err_901", {}),
    ],
)
def test_retryable_faults_are_retried_until_every_recipient_is_sent_once(
    bs, simulator, campaign, tmp_path, kind, options
):
    simulator.inject(kind, times=8, **options)
    out = run(bs, simulator, campaign(300), "--chunk-size", "20", "--concurrency", "4")
    assert out.exit_code == 0, out.stderr
    assert ledger(tmp_path, simulator) == {"rows": 300, "sent": 300, "duplicates": 0, "lost": 0}
    assert simulator.requests == 15 + 8  # each fault cost exactly one extra request
    assert all(r["api_message_id"] for r in results(tmp_path / "results.db"))


def test_a_5xx_burst_longer_than_max_attempts_stops_the_run_with_rows_pending(
    bs, simulator, campaign, tmp_path
):
    simulator.inject("http_503", times=1000, retry_after=0)
    out = run(bs, simulator, campaign(100), "--chunk-size", "10", "--max-attempts", "3")
    assert out.exit_code == 3, out.stderr
    assert "gateway unavailable after 3 attempts" in out.stderr
    assert ledger(tmp_path, simulator, allowed={"pending"}) == {
        "rows": 100,
        "pending": 100,
        "duplicates": 0,
        "lost": 0,
    }


def test_retry_after_is_honoured_before_the_retry(bs, simulator, campaign, tmp_path):
    simulator.inject("http_503", times=1, retry_after=1)
    started = time.monotonic()
    out = bs("run", campaign(1), "--text", "Hi", sim=simulator, env={SCALE: "0.5"})
    assert out.exit_code == 0, out.stderr
    assert time.monotonic() - started >= 0.5  # the 1 s the server asked for, at scale 0.5
    assert ledger(tmp_path, simulator)["sent"] == 1
    assert simulator.requests == 2


# --- not retried: the request may have taken effect ------------------------------------------


def test_drop_after_acceptance_leaves_the_chunk_unknown_and_reconcile_cannot_call_it_sent(
    bs, simulator, campaign, tmp_path
):
    simulator.inject("drop_after", times=1)
    src = campaign(200)
    out = run(bs, simulator, src, "--chunk-size", "50", "--concurrency", "1")
    assert out.exit_code == 4, out.stderr  # finished with unknown outcomes
    figures = ledger(tmp_path, simulator)
    assert figures == {"rows": 200, "sent": 150, "unknown": 50, "duplicates": 0, "lost": 0}
    assert simulator.accepted_count == 200  # the gateway did accept the dropped chunk

    again = run(bs, simulator, src)  # a re-run never resends `unknown` rows
    assert again.exit_code == 4
    assert simulator.accepted_count == 200

    settled = bs("reconcile", "f", "--max-processing", "1", sim=simulator)
    assert settled.exit_code == 0, settled.stderr
    assert "50 still unknown" in settled.stdout, settled.stdout
    # querymsg by the request's climsgid answers for one message of the 50: it proves the request
    # arrived, not that each number was accepted. The rows stay unknown, and say why.
    assert ledger(tmp_path, simulator) == {
        "rows": 200,
        "sent": 150,
        "unknown": 50,
        "duplicates": 0,
        "lost": 0,
    }
    dropped = [r for r in results(tmp_path / "results.db") if r["status"] == "unknown"]
    assert len(dropped) == 50
    assert all("querymsg" in r["error_description"] for r in dropped)
    assert all(r["api_message_id"] is None for r in dropped)


def test_numbers_refused_in_a_lost_answer_are_never_recorded_sent(
    bs, make_simulator, campaign, tmp_path
):
    """Issue: a dropped answer of a request in which the gateway refused some numbers (121
    blocked) was settled by climsgid and every number became `sent`, refused ones included."""
    sim = make_simulator(number_errors={"27821000001": "121", "27821000003": "105"})
    sim.inject("drop_after", times=1)
    src = campaign(6)
    assert run(bs, sim, src, "--chunk-size", "6").exit_code == 4
    assert bs("reconcile", "f", "--max-processing", "1", sim=sim).exit_code == 0
    assert run(bs, sim, src).exit_code == 4  # the next run settles nothing into `sent` either
    rows = {r["msisdn"]: r for r in results(tmp_path / "results.db")}
    assert rows["27821000001"]["status"] != "sent"
    assert rows["27821000003"]["status"] != "sent"
    assert all(r["status"] == "unknown" for r in rows.values())
    ledger(tmp_path, sim)


def request_sizes(sim: Any) -> list[int]:
    """The numbers of each request the gateway accepted, in the order it accepted them."""
    sizes: dict[str, int] = {}
    for rec in records(Path(sim.config.record)):
        sizes[rec["client_message_id"]] = sizes.get(rec["client_message_id"], 0) + 1
    return list(sizes.values())


def test_after_a_lost_answer_requests_risk_one_number_until_answers_come_back_whole(
    bs, simulator, campaign, tmp_path
):
    """A burst of six lost answers (the gateway took each request, the answer never came): at a
    fixed size all six requests of 50 stay unknown for good (querymsg learns of one message of
    each), 300 rows. After the first loss the chunks queued behind it are handed back unsent
    and claimed again one number each: the rest of the burst hits one-number requests, which
    querymsg settles exactly, and only the lost request's 50 stay unknown."""
    simulator.inject("drop_after", times=6)
    src = campaign(1000)
    assert run(bs, simulator, src, "--chunk-size", "50", "--concurrency", "1").exit_code == 4
    assert bs("reconcile", "f", "--max-processing", "1", sim=simulator).exit_code == 0
    figures = ledger(tmp_path, simulator)
    sizes = request_sizes(simulator)
    assert sizes[:6] == [50, 1, 1, 1, 1, 1], sizes[:8]  # nothing queued went at 50 after it
    assert (figures["sent"], figures["unknown"]) == (950, 50)
    assert max(sizes[6:]) == 50  # grown back to --chunk-size once answers came whole
    assert sum(sizes) == 1000  # every number accepted once


def test_drop_after_acceptance_of_a_single_number_is_settled_with_its_id(
    bs, simulator, campaign, tmp_path
):
    simulator.inject("drop_after", times=1)
    src = campaign(5)
    assert run(bs, simulator, src, "--chunk-size", "1").exit_code == 4
    assert bs("reconcile", "f", "--max-processing", "1", sim=simulator).exit_code == 0
    rows = results(tmp_path / "results.db")
    assert ledger(tmp_path, simulator)["sent"] == 5
    accepted = {rec["to"]: rec["api_message_id"] for rec in records(Path(simulator.config.record))}
    assert {r["msisdn"]: r["api_message_id"] for r in rows} == accepted


@pytest.mark.parametrize("kind", ["drop_before", "http_500"])
def test_an_unanswered_request_is_unknown_then_requeued_when_the_gateway_never_saw_it(
    bs, simulator, campaign, tmp_path, kind
):
    """drop_before: the connection closes unanswered; a bare HTTP 500 (an error page, not a SOAP
    Fault) says the server failed mid-request. Neither proves the message was not accepted, so
    neither is resent blindly: `unknown`, and querymsg's ERR 104 puts them back in the queue."""
    simulator.inject(kind, times=1)
    src = campaign(120)
    out = run(bs, simulator, src, "--chunk-size", "40", "--concurrency", "1")
    assert out.exit_code == 4, out.stderr
    assert ledger(tmp_path, simulator) == {
        "rows": 120,
        "sent": 80,
        "unknown": 40,
        "duplicates": 0,
        "lost": 0,
    }
    assert simulator.accepted_count == 80  # not retried: the unanswered chunk never went again

    settled = bs("reconcile", "f", "--max-processing", "1", sim=simulator)
    assert "40 back to pending" in settled.stdout, settled.stdout
    assert run(bs, simulator, src).exit_code == 0
    assert ledger(tmp_path, simulator) == {"rows": 120, "sent": 120, "duplicates": 0, "lost": 0}


def test_slow_answers_past_the_read_timeout_are_unknown_never_resent(
    bs, simulator, campaign, tmp_path
):
    simulator.inject("slow", times=2, seconds=3)
    src = campaign(200)
    out = run(bs, simulator, src, "--chunk-size", "25", "--read-timeout", "0.5")
    assert out.exit_code == 4, out.stderr
    assert ledger(tmp_path, simulator) == {
        "rows": 200,
        "sent": 150,
        "unknown": 50,
        "duplicates": 0,
        "lost": 0,
    }
    assert simulator.accepted_count == 200
    assert bs("reconcile", "f", "--max-processing", "1", sim=simulator).exit_code == 0
    # the two slow requests reached the gateway, but querymsg cannot say for which numbers
    figures = ledger(tmp_path, simulator)
    assert (figures["sent"], figures["unknown"]) == (150, 50)


# --- sessions, throttling ----------------------------------------------------------------------


def test_sessions_expiring_mid_run_are_renewed_without_resending(bs, simulator, campaign, tmp_path):
    simulator.inject("expire_sessions", times=3)
    out = run(bs, simulator, campaign(300), "--chunk-size", "30")
    assert out.exit_code == 0, out.stderr
    assert ledger(tmp_path, simulator) == {"rows": 300, "sent": 300, "duplicates": 0, "lost": 0}


def test_err_130_pauses_every_worker_until_the_named_second(bs, simulator, campaign, tmp_path):
    simulator.inject("throttle", times=1, seconds=0.5)
    out = run(bs, simulator, campaign(400), "--chunk-size", "20", "--concurrency", "4")
    assert out.exit_code == 0, out.stderr
    assert ledger(tmp_path, simulator) == {"rows": 400, "sent": 400, "duplicates": 0, "lost": 0}
    # Only requests already in flight hear ERR 130; after it every worker waits at the gate,
    # so no request goes out (and is refused) before the named second.
    refused = simulator.requests - 20
    assert 1 <= refused <= 4 * 2  # at most the in-flight and queued ones of 4 workers


def test_a_gateway_message_rate_cap_is_waited_out(bs, make_simulator, campaign, tmp_path):
    sim = make_simulator(max_mps=250)
    out = run(bs, sim, campaign(600), "--chunk-size", "50", "--concurrency", "4")
    assert out.exit_code == 0, out.stderr
    assert ledger(tmp_path, sim) == {"rows": 600, "sent": 600, "duplicates": 0, "lost": 0}
    seconds = Counter(int(rec["time"]) for rec in records(Path(sim.config.record)))
    assert max(seconds.values()) <= 250  # the gateway's cap per window held


def test_err_130_past_max_wait_stops_the_run_with_exit_3(bs, simulator, campaign, tmp_path):
    simulator.inject("throttle", times=1, seconds=120)
    out = run(bs, simulator, campaign(100), "--chunk-size", "10", "--max-wait", "5")
    assert out.exit_code == 3, out.stderr
    assert "past --max-wait" in out.stderr
    figures = ledger(tmp_path, simulator, allowed={"pending"})
    assert figures == {"rows": 100, "pending": 100, "duplicates": 0, "lost": 0}


# --- the circuit breaker -------------------------------------------------------------------


def test_credit_running_out_mid_list_stops_the_run_and_a_rerun_sends_exactly_the_rest(
    bs, simulator, campaign, tmp_path
):
    simulator.set_credits(130)
    src = campaign(300)
    # --allow-partial: start although the balance (130) is short of the estimate (300)
    out = run(bs, simulator, src, "--chunk-size", "20", "--concurrency", "4", "--allow-partial")
    assert out.exit_code == 3, out.stderr
    reason = [line for line in out.stderr.splitlines() if line.startswith("stopped:")]
    assert len(reason) == 1 and "301" in reason[0]
    figures = ledger(tmp_path, simulator, allowed={"sent", "pending"})
    assert figures == {"rows": 300, "sent": 130, "pending": 170, "duplicates": 0, "lost": 0}
    requests_at_stop = simulator.requests
    assert requests_at_stop <= 7 + 4 * 2  # 6½ chunks of credit, plus what was already queued

    simulator.set_credits(1e6)  # the operator tops up
    again = run(bs, simulator, src, "--chunk-size", "20")
    assert again.exit_code == 0, again.stderr
    assert ledger(tmp_path, simulator) == {"rows": 300, "sent": 300, "duplicates": 0, "lost": 0}
    assert simulator.requests - requests_at_stop == 9  # 170 rows in chunks of 20


def test_a_request_level_stop_code_sends_nothing_more(bs, make_simulator, campaign, tmp_path):
    sim = make_simulator(allowed_senders=frozenset({"Registered"}))
    out = run(bs, sim, campaign(200), "--from", "Unapproved", "--chunk-size", "10")
    assert out.exit_code == 3, out.stderr
    assert "123" in [ln for ln in out.stderr.splitlines() if ln.startswith("stopped:")][0]
    # the requests in flight when the first answer came back (auto starts with 8)
    assert sim.requests <= AimdSettings().start
    figures = ledger(tmp_path, sim, allowed={"pending"})
    assert figures == {"rows": 200, "pending": 200, "duplicates": 0, "lost": 0}


def test_the_backoff_scale_shrinks_every_wait_retry_after_included():
    slept: list[float] = []
    errors = [ServerBusy("503", status=503), ServerBusy("429", status=429, retry_after=40.0)]

    def call() -> None:
        if errors:
            raise errors.pop(0)

    policy = retry.policy(
        max_attempts=6, stop_event=threading.Event(), sleep=slept.append, scale=0.01
    )
    policy(call)
    assert slept[0] <= (retry.INITIAL_BACKOFF + retry.JITTER) * 0.01
    assert slept[1] == pytest.approx(0.4, abs=0.02)


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (ServerBusy("HTTP 503", status=503), True),
        (ServerBusy("HTTP 429", status=429), True),
        (ServerBusy("HTTP 500", status=500), False),  # may have been accepted: unknown instead
        (ServerBusy("HTTP 502", status=502), False),  # a proxy lost the upstream answer
        (ServerBusy("HTTP 504", status=504), False),  # a proxy timed out: it may have landed
        (SessionExpired("ERR 003 again after re-auth", code="003"), True),
        (OutcomeUnknown("read timeout"), False),
    ],
)
def test_only_requests_that_provably_did_not_take_effect_are_retried(exc, retried):
    assert retry.is_retryable(exc) is retried


# --- everything at once ----------------------------------------------------------------------


def test_a_storm_of_random_faults_ends_with_every_number_accepted_once(
    bs, make_simulator, campaign, tmp_path
):
    sim = make_simulator(
        fault_rates={
            "http_503": 0.08,
            "soap_fault": 0.04,
            "err_901": 0.04,
            "drop_before": 0.03,
            "drop_after": 0.03,
            "expire_sessions": 0.03,
            "throttle": 0.02,
        },
        throttle_seconds=0.2,
        retry_after=0,
        seed=4,
    )
    src = campaign(1000)
    for _ in range(6):  # run, settle, run again: what an operator's cron would do
        out = run(bs, sim, src, "--chunk-size", "20", "--concurrency", "4")
        ledger(tmp_path, sim, allowed={"sent", "unknown", "pending"})
        if out.exit_code == 0:
            break
        bs("reconcile", "f", "--max-processing", "1", sim=sim)
    # nothing is left to send; what stays unknown is a many-number request whose answer was
    # lost after the gateway took it (querymsg cannot say which numbers): accepted, once each
    assert out.exit_code in (0, 4), out.stderr
    figures = ledger(tmp_path, sim, allowed={"sent", "unknown"})
    assert figures["sent"] + figures.get("unknown", 0) == 1000
    accepted = {rec["to"] for rec in records(Path(sim.config.record))}
    unknown = [r["msisdn"] for r in results(tmp_path / "results.db") if r["status"] == "unknown"]
    assert set(unknown) <= accepted


def test_a_balance_short_of_the_estimate_refuses_to_start(bs, simulator, campaign, tmp_path):
    simulator.set_credits(130)
    src = campaign(300)
    out = run(bs, simulator, src, "--chunk-size", "20")
    assert out.exit_code == 3, out.stderr
    reason = [line for line in out.stderr.splitlines() if line.startswith("stopped:")]
    assert len(reason) == 1 and "130" in reason[0] and "300" in reason[0]
    assert simulator.requests == 0
    figures = ledger(tmp_path, simulator, allowed={"pending"})
    assert figures == {"rows": 300, "pending": 300, "duplicates": 0, "lost": 0}


# --- exactly once: answers that do not prove what they seem to ------------------------------


@pytest.mark.parametrize("kind", ["http_502_after", "http_504_after"])
def test_a_proxy_error_after_acceptance_is_unknown_never_resent(
    bs, simulator, campaign, tmp_path, kind
):
    """A proxy in front of the gateway answers 502/504 after the gateway took the request: it was
    retried, and every number of it went out twice (6 of 6, exit 0)."""
    simulator.inject(kind, times=1)
    src = campaign(6)
    out = run(bs, simulator, src, "--chunk-size", "6")
    assert out.exit_code == 4, out.stderr
    assert simulator.requests == 1  # not retried
    assert ledger(tmp_path, simulator) == {"rows": 6, "unknown": 6, "duplicates": 0, "lost": 0}


def test_an_answer_naming_only_the_first_number_leaves_the_others_unknown(
    bs, simulator, campaign, tmp_path
):
    simulator.inject("short_accept", times=1)  # the gateway accepts all six, answers for one
    run(bs, simulator, campaign(6), "--chunk-size", "6")
    ledger(tmp_path, simulator)  # no number accepted twice
    rows = results(tmp_path / "results.db")
    assert [r["status"] for r in rows] == ["sent"] + ["unknown"] * 5
    assert all("did not mention" in r["error_description"] for r in rows[1:])


@pytest.mark.parametrize("kind", ["short_accept", "twice_first"])
def test_a_leftover_row_never_takes_another_numbers_id_when_settled(
    bs, simulator, campaign, tmp_path, kind
):
    """Settling recorded the request's first message ID against a single leftover row (one
    number the answer did not mention, or the other number answered twice): a stranger's ID,
    and `sent` without the gateway's word."""
    simulator.inject(kind, times=1)  # both accepted, the answer names the first only
    run(bs, simulator, campaign(2), "--chunk-size", "2")
    first, leftover = results(tmp_path / "results.db")
    assert (first["status"], leftover["status"]) == ("sent", "unknown")
    settled = bs("reconcile", "f", "--max-processing", "1", sim=simulator)
    assert settled.exit_code == 0, settled.stderr
    assert "1 still unknown" in settled.stdout, settled.stdout  # the gateway never said
    first, leftover = results(tmp_path / "results.db")
    assert leftover["status"] == "unknown"
    assert leftover["api_message_id"] is None
    assert first["status"] == "sent" and first["api_message_id"] is not None
    ledger(tmp_path, simulator)  # and nothing was sent again


@pytest.mark.parametrize("code", ["901", "003", "130", "301", "001"])
def test_an_error_naming_only_the_first_number_is_not_applied_to_the_others(
    bs, simulator, campaign, tmp_path, code
):
    """`ERR: 901 … To: <first>` alone was taken as a request-level error for all six numbers,
    and the five it never mentioned were sent again (5 of 6 twice; 003, 130, 301, 001 alike)."""
    simulator.inject("short_error", times=1, code=code)  # nothing accepted; one error only
    run(bs, simulator, campaign(6), "--chunk-size", "6")
    rows = results(tmp_path / "results.db")
    assert all(r["status"] == "unknown" for r in rows[1:]), [r["status"] for r in rows]
    accepted = Counter(rec["to"] for rec in records(Path(simulator.config.record)))
    assert not set(accepted) & {r["msisdn"] for r in rows[1:]}  # the five were never resent
    assert all(n == 1 for n in accepted.values())


def test_malformed_message_ids_are_a_protocol_error_for_the_row_not_a_success(
    bs, simulator, campaign, tmp_path
):
    simulator.inject("bad_ids", times=1, id="42")
    src = campaign(4)
    out = run(bs, simulator, src, "--chunk-size", "4")
    assert out.exit_code == 4, out.stderr
    rows = results(tmp_path / "results.db")
    assert {r["status"] for r in rows} == {"unknown"}
    assert all(r["api_message_id"] is None for r in rows)
    assert all("malformed message ID" in r["error_description"] for r in rows)
