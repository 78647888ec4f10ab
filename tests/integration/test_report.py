"""`batch-sender report`: states, delivery counts, rate, cost, errors, slowest deliveries.

The figures come from SQL on every engine (``store`` runs on SQLite, PostgreSQL and MariaDB);
the formats (table, CSV, JSON) are checked through the CLI.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from test_delivery import T0, sent_campaign

from batch_sender import report
from batch_sender.states import Status
from batch_sender.store import Campaign, Outcome, Store
from batch_sender.store.delivery import DeliveryReport, DeliveryStore
from batch_sender.store.engine import begin_write
from batch_sender.store.tables import recipients


def delivered_campaign(store: Store, name: str = "c") -> Campaign:
    """Seven rows sent at T0: three delivered (10 s, 70 s, 125 s), one 007, one at 003, one
    without any report, one failed at the send (ERR 114)."""
    campaign, rows = sent_campaign(store, 7, name=name, sent=6)
    store.record(
        [Outcome(rows[6][0], Status.FAILED, error_code="114", error_description="No route")]
    )
    with begin_write(store.engine) as conn:
        conn.execute(
            update(recipients).where(recipients.c.campaign_id == campaign.id).values(claimed_at=T0)
        )
    api = [api_id for _, _, api_id in rows]
    at = [T0 + timedelta(seconds=s) for s in (10, 70, 30, 5, 0, 125)]
    DeliveryStore(store).record(
        [
            DeliveryReport("003", api[0], status_at=at[3], charge=1.0),
            DeliveryReport("004", api[0], status_at=at[0], charge=1.0),
            DeliveryReport("004", api[1], status_at=at[1], charge=1.0),
            DeliveryReport("007", api[2], status_at=at[2], charge=0.5),
            DeliveryReport("003", api[3], status_at=at[3]),
            DeliveryReport("004", api[5], status_at=at[5], charge=1.0),
        ]
    )
    return campaign


def test_delivery_figures_are_counted_in_the_database(store: Store) -> None:
    campaign = delivered_campaign(store)
    deliveries = DeliveryStore(store)

    counts = deliveries.counts(campaign.id)
    assert (counts.accepted, counts.delivered, counts.undelivered) == (6, 3, 1)
    assert (counts.in_progress, counts.no_report) == (1, 1)
    assert (counts.charge, counts.charged) == (3.5, 4)
    assert counts.delivery_rate == 0.5
    assert deliveries.status_counts(campaign.id) == [("004", 3), ("003", 1), ("007", 1)]

    slowest = deliveries.slowest(campaign.id, 2)
    assert [(s.row_no, s.seconds) for s in slowest] == [(6, 125.0), (2, 70.0)]
    assert slowest[0].sent_at == T0 and slowest[0].delivered_at == T0 + timedelta(seconds=125)


def test_the_timeline_counts_final_statuses_per_interval(store: Store) -> None:
    campaign = delivered_campaign(store)
    buckets = DeliveryStore(store).timeline(campaign.id, buckets=60)
    # 125 s from the first send to the last final status: 60 bars of ceil(125/60) = 3 s
    assert {b.width for b in buckets} == {3.0}
    assert len(buckets) == 125 // 3 + 1
    assert [b.start for b in buckets[:2]] == [T0, T0 + timedelta(seconds=3)]
    busy = {
        i: (b.delivered, b.undelivered)
        for i, b in enumerate(buckets)
        if b.delivered + b.undelivered
    }
    assert busy == {10 // 3: (1, 0), 30 // 3: (0, 1), 70 // 3: (1, 0), 125 // 3: (1, 0)}


def test_a_campaign_without_receipts_has_no_timeline_or_delivery_section(store: Store) -> None:
    campaign, _ = sent_campaign(store, 2)
    assert DeliveryStore(store).timeline(campaign.id) == []
    built = report.build(store, "c")
    assert not built.has_delivery
    table = report.render_table(built)
    assert "delivery of" not in table
    assert "delivery: no delivery receipts requested" in table  # not "unknown 2" and a 0.0% rate
    assert built.as_dict()["delivery"] == {
        "receipts_requested": False,
        "accepted": 2,
        "note": "no delivery receipts requested",
    }


def test_the_report_shows_rate_cost_error_codes_and_slowest(store: Store) -> None:
    delivered_campaign(store)
    built = report.build(store, "c")
    table = report.render_table(built)
    assert "delivered            3   50.0%" in table
    assert "failed               1   16.7%" in table
    assert "delivery rate: 50.0%" in table
    assert "cost (from receipts): 3.50 credits for 4 messages" in table
    assert " 007          1  Error delivering message" in table
    assert " 114          1  No route" in table
    assert table.index("row 6 ") < table.index("row 2 ") < table.index("row 1 ")
    assert "2 min 5 s" in table

    d: Any = built.as_dict()["delivery"]
    assert {k: d[k] for k in ("accepted", "delivered", "failed", "in_progress", "unknown")} == {
        "accepted": 6,
        "delivered": 3,
        "failed": 1,
        "in_progress": 1,
        "unknown": 1,
    }
    assert d["delivery_rate"] == 0.5 and d["cost"] == {"credits": 3.5, "messages_charged": 4}
    assert d["errors"] == [{"status": "007", "name": "Error delivering message", "recipients": 1}]
    assert [s["row_no"] for s in d["slowest"]] == [6, 2, 1]


@pytest.fixture
def cli_store(tmp_path: Path) -> Any:
    """The SQLite database the ``bs`` fixture's commands use."""
    with Store.open(f"sqlite:///{tmp_path / 'results.db'}") as opened:
        yield opened


def test_report_formats_through_the_cli(bs: Any, cli_store: Store, tmp_path: Path) -> None:
    delivered_campaign(cli_store, name="camp")

    as_json = json.loads(bs("report", "camp", "--format", "json").stdout)
    assert as_json["counts"] == {"sent": 6, "failed": 1}
    assert as_json["delivery"]["delivered"] == 3

    out = bs("report", "camp", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0])[:11] == list(report.RESULT_COLUMNS)[:11]  # the old columns, first
    assert [(r["delivery_status"], r["delivery_status_name"], r["charge"]) for r in rows[:3]] == [
        ("004", "Received by recipient", "1"),
        ("004", "Received by recipient", "1"),
        ("007", "Error delivering message", "0.5"),
    ]
    assert rows[0]["delivered_at"].startswith("2026-11-25T12:00:10")

    page = tmp_path / "out" / "r.html"
    page.parent.mkdir()
    table = bs("report", "camp", "--html", str(page))
    assert table.exit_code == 0 and "delivery rate: 50.0%" in table.stdout
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    bad = bs("report", "camp", "--html", str(tmp_path / "missing-dir" / "r.html"))
    assert bad.exit_code == 2 and "cannot write" in bad.stderr
