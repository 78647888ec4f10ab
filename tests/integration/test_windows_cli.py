"""Send windows in each recipient's local time, --not-after expiry and --at, with a frozen clock."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv

from batch_sender import windows

NEW_YORK = "12125550100"  # America/New_York

JOBURG = "27821000000"  # Africa/Johannesburg


def records(sim: Any) -> list[dict[str, Any]]:
    path = Path(sim.config.record)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def statuses(tmp_path: Path) -> dict[str, str]:
    con = sqlite3.connect(tmp_path / "results.db")
    rows = dict(con.execute("SELECT msisdn, status FROM results").fetchall())
    con.close()
    return rows


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Freeze the clock the send windows and --at read: ``clock.now = datetime(...)``."""

    class Clock:
        now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    monkeypatch.setattr(windows, "utcnow", lambda: Clock.now)
    return Clock


def test_recipients_outside_their_window_wait_for_the_next_run(bs, simulator, tmp_path, clock):
    src = write_csv(tmp_path / "c.csv", [(NEW_YORK, "x"), (JOBURG, "y")])
    args = ("run", str(src), "--text", "Hi", "--name", "w", "--window", "08:00-20:00", "--json")

    clock.now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # 12:00 Joburg, 05:00 New York
    first = bs(*args, sim=simulator)

    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["counts"] == {"sent": 1, "pending": 1}
    assert [r["to"] for r in records(simulator)] == [JOBURG]

    clock.now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 10:00 New York
    second = bs(*args, sim=simulator)

    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["counts"] == {"sent": 2}
    assert [r["to"] for r in records(simulator)] == [JOBURG, NEW_YORK]


def test_the_run_ends_cleanly_when_no_window_is_open(bs, simulator, tmp_path, clock):
    src = write_csv(tmp_path / "c.csv", [(NEW_YORK, "x"), (JOBURG, "y")])
    clock.now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 04:00 Joburg, 21:00 New York
    out = bs("run", str(src), "--text", "Hi", "--window", "08:00-20:00", "--json", sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == {"pending": 2}
    assert simulator.requests == 0


def test_tz_puts_every_recipient_in_one_zone(bs, simulator, tmp_path, clock):
    src = write_csv(tmp_path / "c.csv", [(NEW_YORK, "x"), (JOBURG, "y")])
    clock.now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # 10:00 UTC, 19:00 Tokyo
    common = ("run", str(src), "--text", "Hi", "--name", "t", "--window", "08:00-18:00", "--json")
    out = bs(*common, "--tz", "Asia/Tokyo", sim=simulator)
    assert json.loads(out.stdout)["counts"] == {"pending": 2}
    out = bs(*common, "--tz", "Europe/London", sim=simulator)
    assert json.loads(out.stdout)["counts"] == {"sent": 2}


def test_not_after_in_the_past_expires_everything_and_sends_nothing(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(JOBURG, "x")])
    out = bs(
        "run", str(src), "--text", "Hi", "--not-after", "2020-01-01 00:00", "--json", sim=simulator
    )
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == {"expired": 1}
    assert simulator.requests == 0


def test_not_after_a_duration_counts_from_staging_not_from_each_run(bs, simulator, tmp_path, clock):
    src = write_csv(tmp_path / "c.csv", [(NEW_YORK, "x"), (JOBURG, "y")])
    args = (
        "run",
        str(src),
        "--text",
        "Hi",
        "--name",
        "n",
        "--window",
        "08:00-20:00",
        "--not-after",
        "6h",
        "--json",
    )
    clock.now = datetime.now(UTC)  # created_at is stamped on the real clock: start from it
    first = bs(*args, sim=simulator)
    assert first.exit_code == 0, first.stderr
    counts = json.loads(first.stdout)["counts"]
    assert counts.get("expired", 0) == 0

    clock.now = datetime.now(UTC) + timedelta(hours=7)  # a cron run the next morning
    second = bs(*args, sim=simulator)
    assert second.exit_code == 0, second.stderr
    after = json.loads(second.stdout)["counts"]
    assert after.get("pending", 0) == 0
    assert after.get("expired", 0) == counts.get("pending", 0)
    assert len(records(simulator)) == counts.get("sent", 0)


def test_at_and_validity_are_sent_and_a_rerun_with_a_new_minute_count_resumes(
    bs, simulator, tmp_path, clock
):
    src = write_csv(tmp_path / "c.csv", [(JOBURG, "x")])
    clock.now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    args = (
        "run",
        str(src),
        "--text",
        "Hi",
        "--name",
        "s",
        "--at",
        "2026-12-01 09:00+00:00",
        "--validity",
        "120",
        "--json",
    )
    out = bs(*args, sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["counts"] == {"sent": 1}
    clock.now = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)  # deliv_time is now 30, not 60
    again = bs(*args, sim=simulator)
    assert again.exit_code == 0, again.stderr  # the same campaign, not a conflict
    assert simulator.accepted_count == 1


def test_at_in_the_past_is_refused_before_anything_is_sent(bs, simulator, tmp_path, clock):
    src = write_csv(tmp_path / "c.csv", [(JOBURG, "x")])
    out = bs("run", str(src), "--text", "Hi", "--at", "2026-11-30 09:00+00:00", sim=simulator)
    assert out.exit_code == 2
    assert "not in the future" in out.stderr
    assert simulator.requests == 0
