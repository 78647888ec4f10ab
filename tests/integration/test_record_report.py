"""The record and the report answer the morning after (issue 18, items 9 and 10), through the CLI:
what each person got (the readable text and the source row's fields, in ``results`` and the CSV
report) and figures that do not mislead (credits spent and still to spend, no receipts asked
for, the stage of each error, a campaign waiting for its send window)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lxml.html
import sqlalchemy as sa
from fixtures_cli import write_csv

from batch_sender.store import migrate
from batch_sender.store.engine import begin_write, create

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


# -- item 9: what each person got -----------------------------------------------------------------


def _field(engine: sa.Engine, name: str) -> str:
    """One source field of ``results.fields`` in SQL, as the README writes it per engine."""
    if engine.dialect.name == "postgresql":
        return f"CAST(fields AS json) ->> '{name}'"
    if engine.dialect.name in ("mysql", "mariadb"):
        return f"JSON_VALUE(fields, '$.{name}')"
    return f"json_extract(fields, '$.{name}')"


def test_results_answer_what_each_person_got_with_sql_alone(
    bs: Any, simulator: Any, tmp_path: Path, db_url: str
) -> None:
    source = write_csv(
        tmp_path / "c.csv",
        [
            ("27821000001", "Zoë", "A-1"),  # not GSM: the message travels as UCS-2 hex
            ("082 100 0002", 'Sipho "Sporty", Jr', "A-2"),  # national; quotes and a comma
            ("n/a", "Bad", "A-3"),  # rejected: no message, the row still there
        ],
        header=("to", "name", "order"),
    )
    out = bs(
        "run", str(source), "--text", TEXT, "--name", "c", "--country", "ZA", sim=simulator,
        env={"BATCH_SENDER_DB": db_url},
    )  # fmt: skip
    assert out.exit_code in (0, 1), out.stderr
    source.unlink()  # the morning after: the file is gone
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f"SELECT row_no, msisdn, status, text, {_field(engine, 'name')}, "
                    f"{_field(engine, 'order')}, {_field(engine, 'to')} "
                    "FROM results WHERE campaign = 'c' ORDER BY row_no"
                )
            ).all()
            (wire,) = conn.execute(
                sa.text("SELECT wire_text FROM messages WHERE unicode = :u"), {"u": True}
            ).one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        (1, "27821000001", "sent", "Hi Zoë, order A-1 is on its way.", "Zoë", "A-1",
         "27821000001"),
        (2, "27821000002", "sent", 'Hi Sipho "Sporty", Jr, order A-2 is on its way.',
         'Sipho "Sporty", Jr', "A-2", "082 100 0002"),
        (3, "n/a", "rejected", None, "Bad", "A-3", "n/a"),
    ]  # fmt: skip
    assert wire.startswith("00480069")  # "Hi" as UCS-2 hex: what wire_text alone showed


def test_the_csv_report_carries_the_text_and_every_source_column(
    bs: Any, simulator: Any, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "c.csv",
        [("27821000001", "Ann", "=1+1", "x"), ("27821000002", "Bo", "B-2", "y")],
        header=("to", "name", "order", "status"),  # "status" is a result column too
    )
    out = bs("run", str(source), "--text", TEXT, "--name", "c", sim=simulator)
    assert out.exit_code == 0, out.stderr
    exported = tmp_path / "results.csv"
    assert bs("report", "c", "--format", "csv", "-o", str(exported)).exit_code == 0
    with exported.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-5:] == ["text", "to", "name", "order", "source_status"]
    assert rows[0]["status"] == "sent" and rows[0]["source_status"] == "x"
    assert rows[0]["text"] == "Hi Ann, order =1+1 is on its way."
    assert rows[0]["order"] == "'=1+1"  # a spreadsheet does not run it
    assert (rows[1]["name"], rows[1]["to"]) == ("Bo", "27821000002")


def test_upgrading_an_old_database_gives_its_messages_their_readable_text(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create(url)
    try:
        with begin_write(engine) as conn:
            migrate.upgrade(conn, "0006_sqlite_pending_index")
            conn.execute(
                sa.text(
                    "INSERT INTO campaigns (id, name, source, fingerprint, options, status, total, "
                    "created_at) VALUES (1, 'old', 'x.csv', 'f', '{}', 'finished', 2, "
                    "'2026-11-30 00:00:00')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO messages (id, campaign_id, digest, wire_text, unicode, parts) "
                    "VALUES (1, 1, 'a', :hex, 1, 1), (2, 1, 'b', 'Plain text', 0, 1)"
                ),
                {"hex": "Zoë".encode("utf-16-be").hex().upper()},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO recipients (campaign_id, row_no, msisdn, status, message_id, "
                    "updated_at) VALUES (1, 1, '27821000001', 'sent', 1, '2026-11-30 00:00:00'), "
                    "(1, 2, '27821000002', 'sent', 2, '2026-11-30 00:00:00')"
                )
            )
        with begin_write(engine) as conn:
            migrate.upgrade(conn)
            texts = conn.execute(sa.text("SELECT text, fields FROM results ORDER BY row_no")).all()
            assert [tuple(t) for t in texts] == [("Zoë", None), ("Plain text", None)]
            migrate.downgrade(conn, "0006_sqlite_pending_index")
            assert "text" not in {c["name"] for c in sa.inspect(conn).get_columns("results")}
    finally:
        engine.dispose()
