"""The sending process (``--send-process``): it is used, it dies with its parent, its death loses
nothing, and a run whose child cannot start sends from threads instead.

The fault, signal and crash suites run every test in both modes (``each_send_process``); these
tests cover what only a second process can do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_crash import LATENCY_MS, MID_RUN, Campaign
from test_faults import check_ledger, records, results

from batch_sender import campaign as campaign_module
from batch_sender.send import pool as workers

ROWS = 3000
_CHILD = re.compile(r"sending from process (\d+)")


def child_pid(stderr: str) -> int:
    found = _CHILD.search(stderr)
    assert found, f"no sending process in the log:\n{stderr[-2000:]}"
    return int(found[1])


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (reaped or a zombie) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def sending_mid_run(
    tmp_path: Path, sim: Any, rows: int = 20_000, accepted: int = 2000
) -> tuple[Campaign, subprocess.Popen[str], list[int]]:
    """A run with a sending process, once the gateway has accepted ``accepted`` messages; the
    campaign, the run's process and its children (the sending process)."""
    camp = Campaign(tmp_path, sim, rows, "--send-process", "always")
    run = camp.start()
    deadline = time.monotonic() + 60
    while sim.accepted_count < accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    kids = children(run.pid)
    assert kids, "the run has no sending process"
    return camp, run, kids


def test_always_sends_from_a_child_process_that_ends_with_the_run(make_simulator, tmp_path):
    sim = make_simulator()
    camp = Campaign(tmp_path, sim, ROWS, "--send-process", "always", "--chunk-size", "50")
    run = camp.start()
    _, err = run.communicate(timeout=120)

    assert run.returncode == 0, err[-2000:]
    pid = child_pid(err)
    assert pid != run.pid
    assert gone(pid)
    assert camp.ledger() == {"rows": ROWS, "sent": ROWS, "duplicates": 0, "lost": 0}


def test_auto_below_the_threshold_sends_from_threads(make_simulator, tmp_path):
    sim = make_simulator()
    camp = Campaign(tmp_path, sim, 500, "--send-process", "auto")
    run = camp.start()
    _, err = run.communicate(timeout=120)

    assert run.returncode == 0, err[-2000:]
    assert not _CHILD.search(err)  # 500 rows < SEND_PROCESS_MIN_ROWS
    assert camp.ledger()["sent"] == 500


def test_auto_uses_a_child_process_for_a_large_campaign(bs, simulator, tmp_path, monkeypatch):
    monkeypatch.setattr(campaign_module, "SEND_PROCESS_MIN_ROWS", 100)
    src = tmp_path / "c.csv"
    src.write_text("to\n" + "".join(f"2782100{i:04d}\n" for i in range(150)))

    out = bs("run", str(src), "--text", "Hi", "--send-process", "auto", sim=simulator)

    assert out.exit_code == 0, out.stderr
    assert _CHILD.search(out.stderr)
    assert simulator.accepted_count == 150


def test_the_child_dies_with_its_parent_and_a_rerun_sends_each_number_once(
    make_simulator, tmp_path
):
    sim = make_simulator(latency_ms=LATENCY_MS)
    camp, run, kids = sending_mid_run(tmp_path, sim)

    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)

    assert all(gone(pid) for pid in kids), "the sending process outlived its parent"
    assert camp.ledger(allowed=MID_RUN)["duplicates"] == 0
    assert camp.finish() == {"rows": 20_000, "sent": 20_000, "duplicates": 0, "lost": 0}


def test_a_child_killed_mid_run_leaves_its_rows_to_the_next_run_never_lost(
    make_simulator, tmp_path
):
    sim = make_simulator(latency_ms=LATENCY_MS)
    camp, run, (kid,) = sending_mid_run(tmp_path, sim)

    os.kill(kid, signal.SIGKILL)
    _, err = run.communicate(timeout=60)

    assert run.returncode == 3, err[-2000:]  # stopped: the run cannot send any more
    # how the parent first noticed: the child's pipe ended, or a chunk could not be handed over
    assert "the sending process ended" in err or "the sending process is gone" in err
    assert "Traceback" not in err  # one line for the run, not a traceback per chunk (issue 15)
    figures = camp.ledger(allowed={"sent", "sending", "pending"})
    assert figures.get("sending", 0) > 0  # what the child held: it may have been accepted
    # the next run settles the rows it must not resend blindly (querymsg), then sends the rest
    settle = camp.start()
    settle.communicate(timeout=120)
    assert camp.ledger(allowed={"sent", "unknown"})["duplicates"] == 0
    accepted = {r["to"] for r in records(Path(sim.config.record))}
    rows = results(camp.db)
    assert {r["msisdn"] for r in rows if r["status"] == "sent"} <= accepted


def test_a_child_that_cannot_start_leaves_the_run_to_threads(bs, simulator, tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "CHILD_COMMAND", (sys.executable, "-c", "raise SystemExit(3)"))
    src = tmp_path / "c.csv"
    src.write_text("to\n" + "".join(f"2782100{i:04d}\n" for i in range(120)))

    out = bs("run", str(src), "--text", "Hi", "--send-process", "always", sim=simulator)

    assert out.exit_code == 0, out.stderr
    assert "sending process did not start" in out.stderr
    assert "sending from this process's threads instead" in out.stderr
    figures = check_ledger(results(tmp_path / "results.db"), records(Path(simulator.config.record)))
    assert figures == {"rows": 120, "sent": 120, "duplicates": 0, "lost": 0}


def test_the_childs_log_lines_reach_the_parents_log(make_simulator, tmp_path: Path) -> None:
    sim = make_simulator()
    sim.inject("drop_after", times=1)  # the courier warns: outcome unknown
    camp = Campaign(tmp_path, sim, 300, "--send-process", "always", "--concurrency", "1")
    run = camp.start()
    _, err = run.communicate(timeout=120)

    assert run.returncode == 4, err[-2000:]
    child_pid(err)
    assert re.search(r"WARNING outcome of request \w+ unknown", err), err[-2000:]


@pytest.fixture(autouse=True)
def _no_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCH_SENDER_SEND_PROCESS", raising=False)


def test_a_child_launched_early_is_ended_when_nothing_is_left_to_send(
    bs, simulator, tmp_path, monkeypatch
):
    """The sending process starts while the run settles and checks credit; a run that then
    finds nothing it may send (every pending row outside its window) ends it at once and leaves
    no process behind. A re-run of a finished campaign does not even launch one."""
    discarded: list[int] = []
    discard = workers.ProcessCouriers.discard

    def counted(self: workers.ProcessCouriers) -> None:
        discarded.append(self.pid)
        discard(self)

    monkeypatch.setattr(workers.ProcessCouriers, "discard", counted)
    src = tmp_path / "c.csv"
    src.write_text("to\n" + "".join(f"2782100{i:04d}\n" for i in range(120)))
    args = ("run", str(src), "--text", "Hi", "--name", "early", "--send-process", "always")
    hour = (datetime.now(UTC).hour + 2) % 24
    closed = ("--tz", "UTC", "--window", f"{hour:02d}:00-{hour:02d}:30")

    waiting = bs(*args, *closed, sim=simulator)
    assert waiting.exit_code == 0, waiting.stderr
    assert len(discarded) == 1  # launched early, nothing sendable: ended
    assert gone(discarded[0])
    first = bs(*args, sim=simulator)
    again = bs(*args, sim=simulator)

    assert (first.exit_code, again.exit_code) == (0, 0), again.stderr
    assert len(discarded) == 1  # the first run used its child; the second launched none
    assert simulator.accepted_count == 120
    assert discarded[0] not in children(os.getpid())


_GARBLING_CHILD = """
import pickle, sys, time
inbox, out = sys.stdin.buffer, sys.stdout.buffer
pickle.load(inbox)  # the spec
out.write(pickle.dumps(("ready",))); out.flush()
pickle.load(inbox)  # the first chunk
out.write(b"\\x80\\x05\\xffgarbled"); out.flush()  # an invalid opcode
time.sleep(20)  # blocked, as a child writing into a full pipe would be
"""


def test_a_garbled_answer_stops_the_child_and_leaves_its_rows_unknown(
    bs, simulator, tmp_path, monkeypatch
):
    """An answer the parent cannot read ends the sending process at once (it might otherwise
    sit blocked on a pipe nobody reads, and the run with it); its rows are not lost."""
    monkeypatch.setattr(workers, "CHILD_COMMAND", (sys.executable, "-c", _GARBLING_CHILD))
    src = tmp_path / "c.csv"
    src.write_text("to\n" + "".join(f"2782100{i:04d}\n" for i in range(120)))

    out = bs("run", str(src), "--text", "Hi", "--send-process", "always", sim=simulator)

    assert out.exit_code == 3, out.stderr
    assert "cannot read the sending process's answers" in out.stderr
    assert "the sending process ended (exit status -9)" in out.stderr  # killed, not its own exit
    rows = results(tmp_path / "results.db")
    assert len(rows) == 120
    # what the child held stays `sending` for the next run to settle (issue 15, item 12)
    assert {r["status"] for r in rows} <= {"sending", "pending"}
    assert any(r["status"] == "sending" for r in rows)
    assert simulator.accepted_count == 0


def test_a_message_goes_out_whole_when_the_pipe_takes_a_few_bytes_at_a_time(monkeypatch):
    """``os.write`` may write less than asked (a signal, a tracer's stop): the outbox writes
    the rest, so the reader never meets half a message followed by the next one."""
    import pickle
    import threading

    read_end, write_end = os.pipe()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    outbox = workers._Outbox(os.fdopen(write_end, "wb"))
    messages = [("result", n, [f"{n:05d}-{k}" for k in range(50)]) for n in range(40)]
    received: list[Any] = []

    def read() -> None:
        with os.fdopen(read_end, "rb") as stream:
            received.extend(pickle.load(stream) for _ in messages)

    reader = threading.Thread(target=read)
    reader.start()
    senders = [
        threading.Thread(target=lambda part=part: [outbox.send(m) for m in part])
        for part in (messages[0::2], messages[1::2])
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    reader.join(10)
    outbox.close()

    assert sorted(received, key=lambda m: m[1]) == messages
    with pytest.raises(ValueError):
        outbox.send(("log",))  # a closed outbox never writes to a reused descriptor
