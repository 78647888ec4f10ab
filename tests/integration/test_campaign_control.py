"""Campaign control: ``campaigns``, ``pause``, ``resume``, ``cancel`` through the results database.

Two workers (console-script processes, as on two machines) send one campaign at a paced rate
against the simulator; an operator pauses or cancels it with the CLI. On SQLite, PostgreSQL and
MariaDB: both workers stop claiming within seconds, their in-flight requests are recorded, no
number is sent twice or lost; a paused run exits 3 and resumes after ``resume``; ``cancel``
leaves every unsent row ``cancelled`` (final) and later runs exit 0 with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv
from sqlalchemy import create_engine, text

ROWS = 2000
RATE = "100"  # parts per second: 20 s account-wide (PostgreSQL, MariaDB), 10 s on SQLite
#: seconds from the operator's command to the last worker's exit: a look at the control every
#: second, in-flight requests landing, the process ending (generous: a loaded 2-core machine)
STOPPED_WITHIN = 10.0


def numbers(n: int, start: int = 27821000000) -> list[str]:
    return [str(start + i) for i in range(n)]


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Campaign:
    """One campaign file, one results database, one simulator; workers as processes."""

    def __init__(self, tmp_path: Path, db_url: str, sim: Any, rows: int = ROWS) -> None:
        exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
        if exe is None:
            pytest.skip("the batch-sender console script is not installed")
        self.exe = exe
        self.sim = sim
        self.db_url = db_url
        self.csv = write_csv(tmp_path / "big.csv", [(n, "x") for n in numbers(rows)])
        creds = sim.credentials
        self.env = {
            **os.environ,
            "BATCH_SENDER_DB": db_url,
            "BATCH_SENDER_GATEWAY_URL": sim.url,
            "CLICKATELL_API_ID": str(creds.api_id),
            "CLICKATELL_USER": creds.user,
            "CLICKATELL_PASSWORD": creds.password,
            "BATCH_SENDER_SEND_PROCESS": "never",
        }
        self.run_args = ["run", str(self.csv), "--text", "Hello", "--name", "big",
                         "--chunk-size", "10", "--rate", RATE]  # fmt: skip

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [self.exe, *self.run_args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.exe, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def statuses(self) -> Counter[str]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, count(*) FROM results GROUP BY status"))
                return Counter({status: int(n) for status, n in rows})
        finally:
            engine.dispose()

    def campaign_row(self) -> tuple[str, str | None]:
        """``campaigns.status`` and ``campaigns.control``, read with plain SQL."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT status, control FROM campaigns")).one()
                return str(row[0]), row[1]
        finally:
            engine.dispose()

    def sent_numbers(self) -> list[str]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return [
                    r[0]
                    for r in conn.execute(text("SELECT msisdn FROM results WHERE status = 'sent'"))
                ]
        finally:
            engine.dispose()

    def claimers(self) -> int:
        """How many workers have claimed rows of the campaign so far."""
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return int(
                    conn.execute(
                        text("SELECT count(DISTINCT claimed_by) FROM recipients")
                    ).scalar_one()
                )
        finally:
            engine.dispose()

    def accepted(self) -> list[str]:
        return [m.to for m in self.sim.accepted]


def staged_and_sending(camp: Campaign, workers: int = 2) -> list[subprocess.Popen[str]]:
    """Start ``workers`` runs of the campaign and wait until each has claimed rows."""
    first = camp.start()
    wait_for(lambda: camp.sim.accepted_count > 0)  # the first has staged; the others join
    procs = [first, *(camp.start() for _ in range(workers - 1))]
    wait_for(lambda: camp.claimers() >= workers, timeout=60)
    return procs


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
        out.append((proc.returncode, stdout, stderr))
    return out


def assert_exactly_once(camp: Campaign) -> None:
    """Every number the gateway accepted is recorded sent, once; nothing recorded sent that
    the gateway did not accept; nothing left in flight."""
    accepted = camp.accepted()
    assert len(accepted) == len(set(accepted)), "a number was sent twice"
    assert sorted(camp.sent_numbers()) == sorted(accepted)
    assert camp.statuses()["sending"] == 0


def test_pause_stops_every_worker_within_seconds_and_resume_lets_the_next_run_finish(
    db_url, make_simulator, tmp_path
):
    sim = make_simulator(latency_ms=20)
    camp = Campaign(tmp_path, db_url, sim)
    procs = staged_and_sending(camp)

    paused = camp.cli("pause", "big")
    asked = time.monotonic()
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("paused campaign 'big': "), paused.stdout
    ends = finish(procs, timeout=30)
    took = time.monotonic() - asked
    for code, _, err in ends:
        assert code == 3, err[-2000:]  # stopped, resumable
        assert "campaign paused: no more claims" in err
        assert "Traceback" not in err
    assert took < STOPPED_WITHIN, f"workers took {took:.1f}s to stop"
    at_pause = sim.accepted_count
    assert 0 < at_pause < ROWS
    assert_exactly_once(camp)
    counts = camp.statuses()
    assert counts["sent"] == at_pause and counts["pending"] == ROWS - at_pause
    # exit 3 is "stopped, resumable": the status says the same, the control says why
    assert camp.campaign_row() == ("stopped", "paused")

    listed = camp.cli("campaigns")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1].split()[:3] == ["big", "paused", f"{ROWS:,}"]

    # a run (the next cron tick) while it is paused: exit 3 at once, nothing sent
    tick = camp.cli(*camp.run_args)
    assert tick.returncode == 3, tick.stderr
    assert "campaign big is paused" in tick.stderr and "batch-sender resume big" in tick.stderr
    assert sim.accepted_count == at_pause

    resumed = camp.cli("resume", "big")
    assert resumed.returncode == 0 and "resumed campaign 'big'" in resumed.stdout
    done = camp.cli(*camp.run_args, "-q")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert_exactly_once(camp)
    assert camp.statuses() == Counter({"sent": ROWS})
    rows = [json.loads(line) for line in camp.cli("campaigns", "--json").stdout.splitlines()]
    assert rows[0]["name"] == "big" and rows[0]["status"] == "finished"
    assert rows[0]["counts"] == {"sent": ROWS}


def test_cancel_leaves_every_unsent_row_cancelled_and_later_runs_send_nothing(
    db_url, make_simulator, tmp_path
):
    sim = make_simulator(latency_ms=20)
    camp = Campaign(tmp_path, db_url, sim)
    procs = staged_and_sending(camp)

    cancelled = camp.cli("cancel", "big")
    asked = time.monotonic()
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("cancelled campaign 'big': ")
    ends = finish(procs, timeout=30)
    assert time.monotonic() - asked < STOPPED_WITHIN
    for code, _, err in ends:
        assert code == 0, err[-2000:]  # an operator's decision, not a failure
        assert "Traceback" not in err
    assert_exactly_once(camp)
    counts = camp.statuses()
    assert counts["sent"] == sim.accepted_count
    assert counts["sent"] + counts["cancelled"] == ROWS  # every unsent row final: cancelled
    assert counts["pending"] == 0

    again = camp.cli(*camp.run_args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [  # noqa: RUF005
        f"campaign big was cancelled ({counts['sent']:,} sent, "
        f"{counts['cancelled']:,} cancelled): nothing sent"
    ]
    assert sim.accepted_count == counts["sent"]
    for action in ("resume", "pause"):
        refused = camp.cli(action, "big")
        assert refused.returncode == 2
        assert refused.stderr.startswith("batch-sender: error: campaign 'big' was cancelled")
    listed = camp.cli("campaigns")
    assert listed.stdout.splitlines()[1].split()[:2] == ["big", "cancelled"]


def test_pause_resume_and_cancel_say_what_they_did_and_refuse_unknown_names(
    bs, simulator, tmp_path
):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(3)])
    # staged, not sent (no credit): three pending rows
    simulator.gateway.set_credits(0)
    assert bs("run", str(src), "--text", "Hi", "--name", "c", sim=simulator).exit_code == 3
    assert bs("pause", "c").stdout.startswith("paused campaign 'c': 3 recipients stay pending")
    assert bs("pause", "c").stdout.strip() == "campaign 'c' is already paused"
    assert bs("resume", "c").stdout.strip() == (
        "resumed campaign 'c': the next run sends its 3 pending recipients"
    )
    assert bs("resume", "c").stdout.strip() == "campaign 'c' is not paused"
    assert bs("-q", "pause", "c").stdout == ""
    assert (
        bs("cancel", "c").stdout.strip() == "cancelled campaign 'c': 3 recipients will not be sent"
    )
    assert bs("cancel", "c").stdout.strip() == "campaign 'c' is already cancelled"
    for action in ("pause", "resume", "cancel"):
        out = bs(action, "nope")
        assert out.exit_code == 2
        assert out.stderr.strip() == (
            "batch-sender: error: no campaign named 'nope' (see `batch-sender campaigns`)"
        )
    assert simulator.accepted_count == 0


def test_campaigns_lists_name_status_counts_and_age_newest_first(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(4)] + [("junk", "x")])
    assert bs("run", str(src), "--text", "Hi", "--name", "first", sim=simulator).exit_code == 0
    assert bs("run", str(src), "--text", "Ho", "--name", "second", sim=simulator).exit_code == 0
    out = bs("campaigns")
    assert out.exit_code == 0
    header, *rows = out.stdout.splitlines()
    assert header.split() == [
        "campaign", "status", "recipients", "pending", "sending", "sent", "failed", "unknown",
        "other", "age", "last", "run",
    ]  # fmt: skip
    assert [r.split()[:9] for r in rows] == [
        ["second", "finished", "5", "0", "0", "4", "0", "0", "1"],
        ["first", "finished", "5", "0", "0", "4", "0", "0", "1"],
    ]
    assert rows[0].split()[9].endswith("s")  # seconds old
    listed = [json.loads(line) for line in bs("campaigns", "--json").stdout.splitlines()]
    assert [c["name"] for c in listed] == ["second", "first"]
    assert listed[0]["counts"] == {"sent": 4, "rejected": 1}
    assert listed[0]["created_at"].endswith("+00:00")


def test_campaigns_on_a_database_that_does_not_exist_exits_2_and_creates_nothing(bs, tmp_path):
    missing = tmp_path / "nowhere.db"
    out = bs("campaigns", env={"BATCH_SENDER_DB": f"sqlite:///{missing}"})
    assert out.exit_code == 2
    assert "no results database" in out.stderr
    assert not missing.exists()


def test_a_pause_reaches_workers_held_by_the_gateways_mt_limit(make_simulator, tmp_path):
    """Every courier waits out an ERR 130 pause and nothing is claimed meanwhile: the pause is
    still seen within seconds, the held chunks go back to pending, the run exits 3."""
    sim = make_simulator(latency_ms=20)
    camp = Campaign(tmp_path, f"sqlite:///{tmp_path / 'results.db'}", sim)
    procs = staged_and_sending(camp, workers=1)
    sim.inject("throttle", times=1, seconds=120)  # ERR 130 for two minutes
    wait_for(lambda: sim.requests > sim.accepted_count // 10 + 2)  # answered 130 at least once
    asked = time.monotonic()
    assert camp.cli("pause", "big").returncode == 0
    [(code, _, err)] = finish(procs, timeout=60)
    assert code == 3, err[-2000:]
    assert "gateway MT limit reached" in err
    assert time.monotonic() - asked < STOPPED_WITHIN
    assert_exactly_once(camp)
    assert camp.statuses()["pending"] == ROWS - sim.accepted_count
