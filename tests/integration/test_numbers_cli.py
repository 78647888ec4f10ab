"""Issue 17 end to end: `run --dry-run --json` and a real run against the simulator say, and
send, the digits the operator meant; `--country-column` gives each row its country."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fixtures_cli import write_csv

from batch_sender.numbers import SCIENTIFIC_REASON

# (raw, the row's country for --country-column, digits sent or None for rejected)
ROWS = [
    ("(201) 555-0195", "US", "12015550195"),
    ("0821002000", "", "27821002000"),
    ("447911123456", "", "447911123456"),
    ("+44 (0)20 7946 0958", "GB", "442079460958"),
    ("27821234567.0", "", "27821234567"),
    ("2.78212E+10", "", None),
    ("07700 900124", "", None),
    ("115123456789", "DE", None),
    ("0612345678", "IT", "390612345678"),
    ("0821002001", "XX", None),
]


def _csv(tmp_path: Path) -> Path:
    rows = [(raw, cc, f"n{i}") for i, (raw, cc, _) in enumerate(ROWS)]
    return write_csv(tmp_path / "mixed.csv", rows, header=("to", "cc", "name"))


def test_the_dry_run_reports_each_interpretation_and_the_countries(bs, tmp_path):
    out = bs(
        "run", str(_csv(tmp_path)), "--text", "Hi", "--country", "ZA",
        "--country-column", "cc", "--dry-run", "--json",
    )  # fmt: skip
    assert out.exit_code == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["recipients"] == 6
    assert report["rejected"] == 4
    reasons = report["rejection_reasons"]
    assert reasons[SCIENTIFIC_REASON] == 1
    assert reasons["not a valid number of ZA (read as a national number)"] == 1
    assert reasons["not a valid number of DE (read as a national number)"] == 1
    assert reasons["unknown country 'XX' in column 'cc'"] == 1
    interpreted = report["numbers_interpreted"]
    assert interpreted["national"]["count"] == 5
    assert ["(201) 555-0195", "12015550195"] in interpreted["national"]["examples"]
    assert interpreted["trunk_prefix_dropped"] == {
        "count": 1,
        "examples": [["+44 (0)20 7946 0958", "442079460958"]],
    }
    assert interpreted["float_fixed"]["examples"] == [["27821234567.0", "27821234567"]]
    assert interpreted["invalid_for_country"]["count"] == 2
    assert interpreted["scientific_notation"]["count"] == 1
    assert report["countries"] == {"ZA": 2, "US": 1, "GG": 1, "GB": 1, "IT": 1}


def test_the_human_dry_run_shows_the_interpretations(bs, tmp_path):
    src = write_csv(tmp_path / "us.csv", [("(201) 555-0195", "a"), ("2.78212E+10", "b")])
    out = bs("run", str(src), "--text", "Hi", "--country", "US", "--dry-run")
    assert out.exit_code == 0, out.stderr
    assert "  national: 1 (e.g. '(201) 555-0195' -> 12015550195)" in out.stdout
    assert "  scientific_notation: 1" in out.stdout
    assert "countries: US 1" in out.stdout


def test_an_unknown_country_column_stops_before_anything_is_staged(bs, tmp_path):
    out = bs("run", str(_csv(tmp_path)), "--text", "Hi", "--country-column", "land")
    assert out.exit_code == 2
    assert "--country-column: no column 'land'" in out.stderr
    assert "Traceback" not in out.stderr
    db = tmp_path / "results.db"
    if db.exists():
        con = sqlite3.connect(db)
        assert con.execute("SELECT count(*) FROM results").fetchone() == (0,)
        con.close()


def _results(tmp_path: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(tmp_path / "results.db")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM results ORDER BY row_no")]
    con.close()
    return rows


def test_a_real_run_sends_and_records_the_meant_digits(bs, simulator, tmp_path):
    out = bs(
        "run", str(_csv(tmp_path)), "--text", "Hi", "--country", "ZA",
        "--country-column", "cc", "--name", "meant", sim=simulator,
    )  # fmt: skip
    assert out.exit_code == 1, out.stderr  # finished, some rejected
    got = _results(tmp_path)
    assert len(got) == len(ROWS)
    for row, (raw, _, digits) in zip(got, ROWS, strict=True):
        if digits is None:
            assert row["status"] == "rejected", raw
            assert row["error_description"], raw
        else:
            assert (row["msisdn"], row["status"]) == (digits, "sent"), raw
    sent = [
        json.loads(line)["to"]
        for line in Path(simulator.config.record).read_text().splitlines()
        if line
    ]
    assert sorted(sent) == sorted(d for _, _, d in ROWS if d is not None)
