"""The record and the report answer the morning after (issue 18, items 9 and 10), through the CLI:
what each person got (the readable text and the source row's fields, in ``results`` and the CSV
report) and figures that do not mislead (credits spent and still to spend, no receipts asked
for, the stage of each error, a campaign waiting for its send window)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lxml.html
from fixtures_cli import write_csv

TEXT = "Hi {name}, order {order} is on its way."


def _figures(page: Path) -> dict[str, str]:
    doc = lxml.html.parse(str(page)).getroot()
    return {dd.get("id"): dd.text_content() for dd in doc.xpath("//dl[@class='cards']//dd")}


def _table(page: Path, table_id: str) -> list[list[str]]:
    doc = lxml.html.parse(str(page)).getroot()
    return [
        [cell.text_content().strip() for cell in tr.findall("td")]
        for tr in doc.get_element_by_id(table_id).iterfind("tbody/tr")
    ]


def _campaign(tmp_path: Path, n: int = 6, extra: Sequence[tuple[str, str, str]] = ()) -> Path:
    rows = [(f"2782100{i:04d}", f"Name {i}", f"A-{i}") for i in range(1, n + 1)]
    return write_csv(tmp_path / "c.csv", [*rows, *extra], header=("to", "name", "order"))


# -- item 10: the figures -------------------------------------------------------------------------


def test_a_stopped_run_reports_credits_spent_and_still_to_spend_not_every_part(
    bs: Any, make_simulator: Any, tmp_path: Path
) -> None:
    sim = make_simulator(credits=3)  # ERR 301 after three parts: the rest stays pending
    out = bs(
        "run", str(_campaign(tmp_path)), "--text", TEXT, "--name", "c", "--chunk-size", "1",
        "--concurrency", "1", "--allow-partial", sim=sim,
    )  # fmt: skip
    assert out.exit_code == 3, out.stderr
    assert "credits (1 per message part): 3 spent, 3 still to spend" in out.stdout
    report = json.loads(bs("report", "c", "--format", "json").stdout)
    assert report["credits"] == {"spent": 3, "to_spend": 3, "unknown": 0}
    assert report["counts"] == {"pending": 3, "sent": 3}
    page = tmp_path / "r.html"
    assert bs("report", "c", "--html", str(page)).exit_code == 0
    figures = _figures(page)
    assert (figures["credits-spent"], figures["credits-to-spend"]) == ("3", "3")
    assert "parts" not in figures  # "6 message parts" read as 6 credits spent


def test_without_a_callback_the_report_says_no_receipts_were_requested(
    bs: Any, simulator: Any, tmp_path: Path
) -> None:
    out = bs("run", str(_campaign(tmp_path, 2)), "--text", TEXT, "--name", "c", sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert "delivery: no delivery receipts requested" in out.stdout
    page = tmp_path / "r.html"
    assert bs("report", "c", "--html", str(page)).exit_code == 0
    figures = _figures(page)
    assert figures["delivery"] == "no delivery receipts requested"
    assert "unknown" not in figures and "delivery-rate" not in figures  # not UNKNOWN 2, 0.0%
    delivery = json.loads(bs("report", "c", "--format", "json").stdout)["delivery"]
    assert delivery["receipts_requested"] is False


def test_with_a_callback_and_no_receipt_yet_the_rate_is_not_a_green_zero(
    bs: Any, simulator: Any, tmp_path: Path
) -> None:
    out = bs(
        "run", str(_campaign(tmp_path, 2)), "--text", TEXT, "--name", "c", "--callback", "3",
        sim=simulator,
    )  # fmt: skip
    assert out.exit_code == 0, out.stderr
    assert "no delivery receipts requested" not in out.stdout
    page = tmp_path / "r.html"
    assert bs("report", "c", "--html", str(page)).exit_code == 0
    figures = _figures(page)
    assert figures["unknown"] == "2"  # asked for, none arrived yet: unknown is the truth
    assert figures["delivery-rate"] == "-"
    doc = lxml.html.parse(str(page)).getroot()
    assert "ok" not in doc.xpath("//dd[@id='delivery-rate']/..")[0].get("class")
    report = json.loads(bs("report", "c", "--format", "json").stdout)
    assert report["delivery"]["delivery_rate"] is None


def test_errors_carry_their_stage_staging_for_rejected_rows_send_for_the_gateways(
    bs: Any, make_simulator: Any, tmp_path: Path
) -> None:
    sim = make_simulator(number_errors={"27821000002": "114"})
    source = _campaign(tmp_path, 3, [("n/a", "Bad", "A-9")])
    out = bs("run", str(source), "--text", TEXT, "--name", "c", sim=sim)
    assert "rejected at staging:" in out.stdout and "refused by the gateway:" in out.stdout
    page = tmp_path / "r.html"
    assert bs("report", "c", "--html", str(page)).exit_code == 0
    rows = sorted(_table(page, "errors"))
    assert rows[0][0] == "send" and rows[0][1] == "114"
    assert rows[1] == ["staging", "-", "not a phone number", "1"]
    errors = json.loads(bs("report", "c", "--format", "json").stdout)["errors"]
    assert {(e["stage"], e["status"]) for e in errors} == {
        ("staging", "rejected"),
        ("send", "failed"),
    }


def test_a_campaign_waiting_for_its_send_window_shows_waiting_not_finished(
    bs: Any, simulator: Any, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    opens, closes = now + timedelta(hours=2), now + timedelta(hours=3)
    window = f"{opens:%H:%M}-{closes:%H:%M}"
    out = bs(
        "run", str(_campaign(tmp_path, 2)), "--text", TEXT, "--name", "c", "--window", window,
        "--tz", "UTC", sim=simulator,
    )  # fmt: skip
    assert out.stdout.startswith("campaign c  (waiting;"), out.stdout + out.stderr
    assert "0 spent, 2 still to spend" in out.stdout
    report = json.loads(bs("report", "c", "--format", "json").stdout)
    assert report["status"] == "waiting"
    page = tmp_path / "r.html"
    assert bs("report", "c", "--html", str(page)).exit_code == 0
    doc = lxml.html.parse(str(page)).getroot()
    assert doc.get_element_by_id("status").text_content() == "waiting"
