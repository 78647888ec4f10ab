"""`batch-sender run` end to end: CSV → SQLite → the simulator over HTTP → the `results` view.

The behaviours every results database must show (IDs matching the simulator's record,
per-destination errors, the summary view, re-runs) are in test_run_databases.py, parametrised
over SQLite, PostgreSQL and MariaDB; this file holds the rest, on SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv

from batch_sender import sms


def results(tmp_path: Path, campaign: str | None = None) -> list[dict[str, Any]]:
    """The `results` view, read with plain SQL as an operator would."""
    con = sqlite3.connect(tmp_path / "results.db")
    con.row_factory = sqlite3.Row
    sql = "SELECT * FROM results"
    args: tuple[str, ...] = ()
    if campaign is not None:
        sql += " WHERE campaign = ?"
        args = (campaign,)
    rows = [dict(r) for r in con.execute(sql + " ORDER BY row_no", args)]
    con.close()
    return rows


def records(sim: Any) -> list[dict[str, Any]]:
    """What the simulator wrote to its --record file, one dict per accepted message."""
    path = Path(sim.config.record)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def numbers(n: int, start: int = 27821000000) -> list[str]:
    return [str(start + i) for i in range(n)]


def test_identical_texts_share_requests_of_chunk_size(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(250)])
    out = bs("run", str(src), "--text", "Same for all", "--chunk-size", "100", sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert simulator.requests == 3
    per_request: dict[str, int] = {}
    for rec in records(simulator):
        per_request[rec["client_message_id"]] = per_request.get(rec["client_message_id"], 0) + 1
    assert sorted(per_request.values()) == [50, 100, 100]


def test_numbers_are_normalised_or_rejected_with_a_reason(bs, simulator, tmp_path):
    rows = [
        ("082 100 2000", "national"),
        ("+27 82 100 2001", "plus"),
        ("0027821002002", "double zero"),
        ("27821002003", "plain"),
        ("2799900001", "doc test number"),
        ("not a number", "junk"),
        ("", "empty"),
    ]
    src = write_csv(tmp_path / "c.csv", rows)
    out = bs("run", str(src), "--text", "Hello", "--country", "ZA", "--name", "n", sim=simulator)
    assert out.exit_code == 1, out.stderr  # finished, some rejected
    got = {r["row_no"]: r for r in results(tmp_path)}
    assert [got[i]["msisdn"] for i in range(1, 6)] == [
        "27821002000",
        "27821002001",
        "27821002002",
        "27821002003",
        "2799900001",
    ]
    assert all(got[i]["status"] == "sent" for i in range(1, 6))
    for i in (6, 7):
        assert got[i]["status"] == "rejected"
        assert got[i]["error_description"]
        assert got[i]["api_message_id"] is None
    assert sorted(rec["to"] for rec in records(simulator)) == sorted(
        got[i]["msisdn"] for i in range(1, 6)
    )


def test_duplicates_after_normalisation_are_marked_and_sent_once(bs, simulator, tmp_path):
    src = write_csv(
        tmp_path / "c.csv",
        [("082 100 2000", "a"), ("+27821002000", "b"), ("27821002000", "c"), ("27821002001", "d")],
    )
    out = bs("run", str(src), "--text", "Hi", "--country", "ZA", sim=simulator)
    assert out.exit_code == 0, out.stderr
    statuses = [r["status"] for r in results(tmp_path)]
    assert statuses == ["sent", "duplicate", "duplicate", "sent"]
    assert sorted(rec["to"] for rec in records(simulator)) == ["27821002000", "27821002001"]


def test_running_the_same_campaign_again_sends_nothing_again(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(120)])
    first = bs("run", str(src), "--text", "Hi", sim=simulator)
    assert first.exit_code == 0, first.stderr
    second = bs("run", str(src), "--text", "Hi", sim=simulator)
    assert second.exit_code == 0, second.stderr
    assert len(records(simulator)) == 120
    assert len(results(tmp_path)) == 120


def test_same_name_with_other_text_is_refused(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(3)])
    assert bs("run", str(src), "--text", "Hi", "--name", "k", sim=simulator).exit_code == 0
    out = bs("run", str(src), "--text", "Other", "--name", "k", sim=simulator)
    assert out.exit_code == 2
    assert "already exists" in out.stderr
    assert "Traceback" not in out.stderr
    assert len(records(simulator)) == 3


@pytest.mark.parametrize(
    ("header", "args", "expect"),
    [
        (("phone", "name"), ["--text", "Hi"], "to"),
        (("to", "name"), ["--text", "Hi {nmae}"], "nmae"),
        (("to", "name"), [], "text"),
    ],
)
def test_bad_input_exits_2_before_staging_anything(bs, simulator, tmp_path, header, args, expect):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "x")], header=header)
    out = bs("run", str(src), *args, sim=simulator)
    assert out.exit_code == 2, out.stdout + out.stderr
    assert expect in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert simulator.requests == 0
    db = tmp_path / "results.db"
    if db.exists():
        con = sqlite3.connect(db)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "campaigns" in tables:
            assert con.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 0


def test_dry_run_counts_without_staging_or_sending(bs, simulator, tmp_path):
    rows = [
        ("27821000001", "Ann"),
        ("27821000001", "Ann"),
        ("bad", "Bo"),
        ("27821000002", "Łukasz"),
    ]
    src = write_csv(tmp_path / "c.csv", rows)
    out = bs("run", str(src), "--text", "Hi {name}", "--dry-run", "--json", sim=simulator)
    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["recipients"] == 2
    assert data["rejected"] == 1
    assert data["duplicates"] == 1
    assert data["suppressed"] == 0
    assert data["parts"] == 2
    assert "Ł" in data["non_gsm_characters"]
    assert simulator.requests == 0
    assert not (tmp_path / "results.db").exists()


def test_non_gsm_text_goes_as_ucs2_hex(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "Łukasz"), ("27821000002", "Ann")])
    out = bs("run", str(src), "--text", "Cześć {name}", sim=simulator)
    assert out.exit_code == 0, out.stderr
    sent = {rec["to"]: rec for rec in records(simulator)}
    assert sent["27821000001"]["unicode"] is True
    assert sms.from_ucs2_hex(sent["27821000001"]["text"]) == "Cześć Łukasz"


def test_long_text_is_sent_with_its_part_count(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "x")])
    text = "A" * 400  # 3 parts of 153
    out = bs("run", str(src), "--text", text, sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert results(tmp_path)[0]["parts"] == 3
    assert records(simulator)[0]["parts"] == 3


def test_report_formats(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "x"), ("=cmd|calc", "y")])
    bs("run", str(src), "--text", "Hi", "--name", "r", sim=simulator)
    table = bs("report", "r")
    assert table.exit_code == 0
    assert "sent" in table.stdout and "rejected" in table.stdout
    as_json = json.loads(bs("report", "r", "--format", "json").stdout)
    assert as_json["counts"] == {"sent": 1, "rejected": 1}
    as_csv = bs("report", "r", "--format", "csv").stdout.splitlines()
    assert as_csv[0].startswith("campaign,row_no,msisdn,status")
    assert any(line.startswith("r,2,'=cmd|calc,rejected") for line in as_csv)


def test_wrong_credentials_stop_the_run_with_exit_3(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "x")])
    secret = "S3cret-Pw-9"
    out = bs("run", str(src), "--text", "Hi", sim=simulator, env={"CLICKATELL_PASSWORD": secret})
    assert out.exit_code == 3, out.stdout + out.stderr
    assert secret not in out.stdout + out.stderr
    assert "Authentication failed" in out.stderr
    assert results(tmp_path) == []  # refused before staging: fix the credentials, run again
    assert records(simulator) == []


def test_console_script_runs_a_campaign(bs_script, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(5)])
    proc = bs_script("run", str(src), "--text", "Hi", sim=simulator)
    assert proc.returncode == 0, proc.stderr
    assert "sent" in proc.stdout
    assert len(records(simulator)) == 5
