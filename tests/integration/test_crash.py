"""Crash safety: a 20,000-recipient campaign killed at random instants, re-run until done.

The console script runs in a subprocess against the in-process simulator (with --record and some
latency, so a run lasts a few seconds); it is killed with SIGKILL (or stopped with SIGTERM) at
seeded random instants, then run again until it finishes. The simulator must have accepted every
number exactly once, and the `results` table must agree with it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv
from test_faults import check_ledger, numbers, records, results

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("each_send_process")]

ROWS = 20_000
SEED = 20261125
LATENCY_MS = 40  # 200 requests of 100 over 4 connections: about 2-3 s of sending per full run


def _exe() -> str:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    return exe


def _has_results(db: Path) -> bool:
    if not db.exists():
        return False
    with contextlib.closing(sqlite3.connect(db)) as con:
        found = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'results'").fetchone()
    return found is not None


class Campaign:
    """One campaign file, one results database, one simulator; start runs as cron would."""

    def __init__(self, tmp_path: Path, sim: Any, rows: int = ROWS, *extra: str) -> None:
        self.sim = sim
        self.rows = rows
        self.db = tmp_path / "results.db"
        self.csv = write_csv(tmp_path / "big.csv", [(n, "x") for n in numbers(rows)])
        creds = sim.credentials
        self.env = {
            **os.environ,
            "BATCH_SENDER_DB": f"sqlite:///{self.db}",
            "BATCH_SENDER_GATEWAY_URL": sim.url,
            "CLICKATELL_API_ID": str(creds.api_id),
            "CLICKATELL_USER": creds.user,
            "CLICKATELL_PASSWORD": creds.password,
        }
        # the simulator accepts at once: a 104 can be trusted a second after a kill;
        # --concurrency 4 (the old default): the kills must find runs still sending (auto
        # would grow and finish a 20,000-row run before a kill comes)
        self.args = [_exe(), "run", str(self.csv), "--text", "Hello", "--name", "big",
                     "--max-processing", "1", "--concurrency", "4", *extra]  # fmt: skip

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ledger(self, **kw: Any) -> dict[str, int]:
        # a kill before the first migration committed leaves no file, or one without the view
        rows = results(self.db) if _has_results(self.db) else []
        return check_ledger(rows, records(Path(self.sim.config.record)), **kw)

    def finish(self) -> dict[str, int]:
        """Run again until the campaign ends: every recipient `sent`, or `unknown` (exit 4)
        because a killed run had its multi-number request accepted without reading the answer:
        querymsg says the request arrived, not which numbers were accepted. Every `unknown` row
        must be one the gateway accepted (none was refused here), and none accepted twice."""
        for _ in range(3):
            done = self.start()
            out, err = done.communicate(timeout=120)
            if done.returncode in (0, 4):
                figures = self.ledger()
                accepted = {rec["to"] for rec in records(Path(self.sim.config.record))}
                unknown = {r["msisdn"] for r in results(self.db) if r["status"] == "unknown"}
                assert unknown <= accepted
                assert (done.returncode == 4) == bool(unknown)
                settled = figures.get("sent", 0) + figures.pop("unknown", 0)
                return {**figures, "sent": settled}
        raise AssertionError(f"exit {done.returncode}: {err[-2000:]}")


MID_RUN = {"sent", "sending", "pending", "unknown"}


def test_sigkill_at_random_instants_never_sends_twice_nor_loses_a_recipient(
    make_simulator, tmp_path
):
    sim = make_simulator(latency_ms=LATENCY_MS)
    camp = Campaign(tmp_path, sim)
    rng = random.Random(SEED)
    # one kill while staging or starting, then four at random points of the send (seeded): when
    # the gateway has accepted that many messages, plus up to 60 ms so the kill lands anywhere in
    # a request's life (claimed, written, accepted, answered, recorded)
    kills: list[float | int] = [rng.uniform(0.05, 0.6)]
    kills += sorted(rng.sample(range(1000, ROWS - 1000), 4))
    sent_at_kill = []
    for point in kills:
        proc = camp.start()
        if isinstance(point, float):
            time.sleep(point)
        else:
            deadline = time.monotonic() + 60
            while sim.accepted_count < point and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.06))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        figures = camp.ledger(allowed=MID_RUN)  # consistent at every instant
        sent_at_kill.append(figures.get("sent", 0))
        print("after SIGKILL:", figures, "accepted:", sim.accepted_count)
    assert sum(0 < n < ROWS for n in sent_at_kill) >= 3, sent_at_kill  # killed mid-send
    assert camp.finish() == {"rows": ROWS, "sent": ROWS, "duplicates": 0, "lost": 0}
    assert sim.accepted_count == ROWS


def test_sigterm_stops_cleanly_with_exit_130_and_a_rerun_resumes(make_simulator, tmp_path):
    sim = make_simulator(latency_ms=LATENCY_MS)
    camp = Campaign(tmp_path, sim)
    rng = random.Random(SEED + 1)
    for _ in range(2):
        before = sim.accepted_count
        proc = camp.start()
        deadline = time.monotonic() + 30
        while sim.accepted_count < before + 500 and time.monotonic() < deadline:
            time.sleep(0.02)  # until it is sending
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err[-2000:]
        assert time.monotonic() - stopped_at < 5  # in-flight requests answer in ~40 ms
        assert "interrupted: run the same command again to resume" in err
        assert "Traceback" not in err
        assert "big" in out  # the summary was written
        figures = camp.ledger(allowed={"sent", "pending"})  # nothing left in flight
        assert 0 < figures["sent"] < ROWS
        print("after SIGTERM:", figures)
    assert camp.finish() == {"rows": ROWS, "sent": ROWS, "duplicates": 0, "lost": 0}
