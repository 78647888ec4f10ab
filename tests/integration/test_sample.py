"""The shipped sample campaign: valid numbers but the deliberate few, in the wheel, and
``batch-sender demo`` running it against the simulator from any directory (issue 17, 18 item 13)."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "batch_sender" / "sample" / "campaign.csv"
TEXT = "Hi {name}, your parcel for {city} is on its way."


def _generator():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "sample_data"))
    try:
        import make_campaign
    finally:
        sys.path.remove(str(ROOT / "sample_data"))
    return make_campaign


def test_the_generator_writes_the_shipped_file_byte_for_byte_whatever_the_hash_seed(
    tmp_path: Path,
) -> None:
    script = ROOT / "sample_data" / "make_campaign.py"
    for seed in ("0", "1234"):
        out = tmp_path / f"campaign-{seed}.csv"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, str(script), "--out", str(out)], env=env, check=True)
        assert filecmp.cmp(out, SHIPPED, shallow=False)
    # the checkout's old path still reads the same file (the README and reports.sql use it)
    assert (ROOT / "sample_data" / "campaign.csv").read_bytes() == SHIPPED.read_bytes()
    assert _generator().SAMPLE == SHIPPED


def test_the_sample_rejects_only_its_deliberately_bad_rows_grouped_by_reason(bs) -> None:
    out = bs("run", str(SHIPPED), "--country", "ZA", "--text", TEXT, "--dry-run", "--json")
    assert out.exit_code == 0, out.stderr
    report = json.loads(out.stdout)
    rows = report["recipients"] + report["rejected"] + report["duplicates"]
    assert rows == 3000
    # ~2% bad on purpose (letters, too short/long, empty, a UK national number), not 20%
    assert 30 <= report["rejected"] <= 90, report["rejection_reasons"]
    assert 30 <= report["duplicates"] <= 90
    reasons = report["rejection_reasons"]
    # one line per reason, not one per number: no reason names the digits it was read as
    assert len(reasons) <= 8, reasons
    assert not [r for r in reasons if re.search(r"\d{7}", r)], reasons
    assert reasons["not a valid number of ZA (read as a national number)"] >= 1
    assert report["countries"]["ZA"] > 2500
    # the interpreted digits are still shown, in the examples
    invalid = report["numbers_interpreted"]["invalid_for_country"]["examples"]
    assert ["07700 900124", "277700900124"] in invalid


def test_demo_sends_the_sample_to_the_simulator_from_any_directory(tmp_path: Path) -> None:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    db = tmp_path / "demo.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_SENDER", "CLICKATELL"))}
    env["BATCH_SENDER_DB"] = f"sqlite:///{tmp_path / 'production.db'}"  # never used by demo
    done = subprocess.run(
        [exe, "demo", "--db", f"sqlite:///{db}", "--json"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1 while rejected rows fail a run
    assert "Traceback" not in done.stderr
    summary = json.loads(done.stdout)
    assert summary["counts"]["sent"] > 2800
    assert not (tmp_path / "production.db").exists()
    assert list(elsewhere.iterdir()) == []
    with sqlite3.connect(db) as conn:
        (total,) = conn.execute("SELECT COUNT(*) FROM results").fetchone()
        (sent,) = conn.execute("SELECT COUNT(*) FROM results WHERE status = 'sent'").fetchone()
    assert total == 3000
    assert sent == summary["counts"]["sent"]


def test_demo_without_a_database_prints_the_report_and_leaves_nothing_behind(
    bs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    out = bs("demo")
    assert out.exit_code in (0, 1), out.stderr
    assert "campaign campaign-" in out.stdout
    assert re.search(r"sent\s+2,8\d\d", out.stdout), out.stdout
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "results.db").exists()  # BATCH_SENDER_DB is not read


def test_the_wheel_ships_the_sample_and_demo_runs_from_it_alone(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    wheels = list(tmp_path.glob("batch_sender-*.whl"))
    if built.returncode != 0 or not wheels:
        pytest.skip(f"cannot build a wheel here: {built.stderr[-300:]}")
    with zipfile.ZipFile(wheels[0]) as whl:
        assert "batch_sender/sample/campaign.csv" in whl.namelist()
        assert whl.read("batch_sender/sample/campaign.csv") == SHIPPED.read_bytes()
        whl.extractall(tmp_path / "unpacked")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCH_SENDER", "CLICKATELL"))}
    env["PYTHONPATH"] = str(tmp_path / "unpacked")  # the wheel's files before the checkout's
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, batch_sender; assert 'unpacked' in batch_sender.__file__;"
         " from batch_sender.cli import main; sys.argv = ['batch-sender', 'demo']; main()"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert re.search(r"sent\s+2,8\d\d", done.stdout), done.stdout + done.stderr
