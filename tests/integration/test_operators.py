"""The suppression list through the CLI and the library; overlapping cron runs on SQLite."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv

from batch_sender import suppression
from batch_sender.store import Store
from batch_sender.store import operators as store_operators


def records(sim: Any) -> list[dict[str, Any]]:
    path = Path(sim.config.record)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def statuses(tmp_path: Path, campaign: str) -> dict[str, str]:
    con = sqlite3.connect(tmp_path / "results.db")
    rows = con.execute(
        "SELECT msisdn, status FROM results WHERE campaign = ? ORDER BY row_no", (campaign,)
    ).fetchall()
    con.close()
    return dict(rows)


def test_suppress_add_list_remove_normalises_like_recipients(bs, tmp_path):
    out = bs("suppress", "add", "082 100 2000", "+27 82 100 2001", "--country", "ZA")
    assert out.exit_code == 0, out.stderr
    assert out.stdout.strip() == "2 added"

    again = bs("suppress", "add", "27821002000")  # the same number, international digits
    assert again.stdout.strip() == "0 added"

    listed = bs("suppress", "list", "--json")
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["msisdn"] for e in entries] == ["27821002000", "27821002001"]
    assert {e["source"] for e in entries} == {"cli"}

    removed = bs("suppress", "remove", "+27821002000")
    assert removed.stdout.strip() == "1 removed"
    assert bs("suppress", "list").stdout.split()[0] == "27821002001"


def test_suppress_add_skips_what_is_not_a_number_and_exits_1(bs):
    out = bs("suppress", "add", "27821002000", "not-a-number")
    assert out.exit_code == 1
    assert "1 added" in out.stdout
    assert "not-a-number" in out.stderr


def test_suppress_import_reads_a_csv_column_or_plain_lines(bs, tmp_path):
    csv_file = write_csv(
        tmp_path / "optouts.csv",
        [("Ann", "27821000001"), ("Bob", "27821000002")],
        header=("name", "msisdn"),
    )
    plain = tmp_path / "plain.txt"
    plain.write_text("# opt-outs from the shop\n27821000003\n\n082 100 0004\n")

    assert bs("suppress", "import", str(csv_file)).stdout.strip() == "2 added"
    assert bs("suppress", "import", str(plain), "--country", "ZA").stdout.strip() == "2 added"
    listed = bs("suppress", "list").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == [
        "27821000001",
        "27821000002",
        "27821000003",
        "27821000004",
    ]
    assert all(line.split("\t")[1] == "import" for line in listed)


def test_suppressed_numbers_never_reach_the_gateway(bs, simulator, tmp_path):
    numbers = [str(27821000000 + i) for i in range(20)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
    assert bs("suppress", "add", numbers[3], numbers[7]).exit_code == 0

    out = bs("run", str(src), "--text", "Hi", "--name", "c1", "--json", sim=simulator)

    assert out.exit_code == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["counts"] == {"sent": 18, "suppressed": 2}
    sent_to = {r["to"] for r in records(simulator)}
    assert sent_to == set(numbers) - {numbers[3], numbers[7]}
    assert statuses(tmp_path, "c1")[numbers[3]] == "suppressed"


def test_a_number_suppressed_after_staging_is_not_sent_when_the_campaign_resumes(
    bs, simulator, tmp_path
):
    numbers = [str(27821000000 + i) for i in range(10)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
    # stage only: the gateway stops the run before anything is sent (no credit)
    simulator.set_credits(0)
    first = bs("run", str(src), "--text", "Hi", "--name", "c1", sim=simulator)
    assert first.exit_code == 3, first.stderr
    assert set(statuses(tmp_path, "c1").values()) == {"pending"}

    assert bs("suppress", "add", numbers[0]).exit_code == 0  # e.g. a STOP reply overnight
    assert statuses(tmp_path, "c1")[numbers[0]] == "suppressed"  # at once, not at the next run
    simulator.set_credits(1000)
    second = bs("run", str(src), "--text", "Hi", "--name", "c1", sim=simulator)

    assert second.exit_code == 0, second.stderr
    assert numbers[0] not in {r["to"] for r in records(simulator)}
    assert len(records(simulator)) == 9


def test_dry_run_counts_suppressed_numbers_and_writes_nothing(bs, tmp_path):
    numbers = [str(27821000000 + i) for i in range(5)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
    bs("suppress", "add", numbers[0])
    before = (tmp_path / "results.db").stat().st_mtime_ns

    out = bs("run", str(src), "--text", "Hi", "--dry-run", "--json")

    assert out.exit_code == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["suppressed"] == 1 and data["recipients"] == 4
    assert (tmp_path / "results.db").stat().st_mtime_ns == before


def test_dry_run_without_a_results_database_does_not_create_one(bs, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    out = bs("run", str(src), "--text", "Hi", "--dry-run", "--json")
    assert out.exit_code == 0, out.stderr
    assert json.loads(out.stdout)["suppressed"] == 0
    assert not (tmp_path / "results.db").exists()


@pytest.mark.parametrize(
    ("text", "stops"),
    [
        ("STOP", True),
        ("stop please", True),
        ("  Stop.", True),
        ("UNSUBSCRIBE", True),
        ("stopped by the shop", False),
        ("please stop", False),
        ("", False),
    ],
)
def test_stop_keyword_is_the_first_word_of_the_reply(text, stops):
    assert (suppression.stop_keyword(text) is not None) is stops


def test_handle_mo_adds_the_sender_of_a_stop_reply(store: Store) -> None:
    assert suppression.handle_mo(store, "+27821000009", "Stop") is True
    assert store_operators.is_suppressed(store, "27821000009")
    [entry] = list(store_operators.list_suppressions(store))
    assert entry.source == "mo" and entry.note == "Stop"


def test_handle_mo_ignores_other_replies_and_honours_custom_keywords(store: Store) -> None:
    assert suppression.handle_mo(store, "27821000009", "Thanks!") is False
    assert suppression.handle_mo(store, "27821000009", "stop", keywords={"STOPP"}) is False
    assert not store_operators.is_suppressed(store, "27821000009")
    assert suppression.handle_mo(store, "27821000009", "Stopp", keywords={"STOPP"}) is True
    assert store_operators.is_suppressed(store, "27821000009")


def test_two_overlapping_cron_runs_on_sqlite_share_the_work_without_sending_twice(
    make_simulator, tmp_path, bs_script
):
    # Pinned to 2 in flight at 40 ms a request (150 requests, about 3 s alone): under auto the
    # first run could finish all 150 before the second had started, and there is nothing to share.
    sim = make_simulator(latency_ms=40)
    numbers = [str(27821000000 + i) for i in range(1500)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
    args = (
        "run", str(src), "--text", "Hi", "--name", "nightly", "--chunk-size", "10",
        "--concurrency", "2", "--json",
    )  # fmt: skip

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs: list[subprocess.CompletedProcess[str]] = list(
            pool.map(lambda _: bs_script(*args, sim=sim), range(2))
        )

    for run in runs:
        assert run.returncode == 0, run.stderr
    sent = [r["to"] for r in records(sim)]
    assert sorted(sent) == sorted(numbers)  # every number exactly once
    assert set(statuses(tmp_path, "nightly").values()) == {"sent"}
    summaries = [json.loads(run.stdout) for run in runs]
    assert sum(s["staged"] for s in summaries) == 1  # one staged it, the other joined
    assert all(s["requests"] > 0 for s in summaries), "both runs should have sent a share"


def test_a_stop_reply_at_the_callback_receiver_suppresses_its_sender(bs, simulator, tmp_path):
    import functools

    import httpx

    from batch_sender.delivery.callbacks import CallbackServer
    from batch_sender.store.delivery import DeliveryStore

    db = f"sqlite:///{tmp_path / 'results.db'}"
    with Store.open(db) as store:
        server = CallbackServer(
            DeliveryStore(store), on_mo=functools.partial(suppression.handle_mo, store)
        ).start()
        try:
            mo = {"api_id": "123456", "moMsgId": "m1", "to": "27990000000", "timestamp": "0"}
            stop = httpx.post(server.url, data={**mo, "from": "+27821000001", "text": "Stop"})
            chat = httpx.post(server.url, data={**mo, "from": "27821000002", "text": "thanks!"})
            junk = httpx.post(server.url, data={"moMsgId": "m2", "text": "STOP"})  # no sender
        finally:
            server.stop()
    assert (stop.status_code, stop.text.strip()) == (200, "stop recorded")
    assert (chat.status_code, chat.text.strip()) == (200, "mo ignored")
    assert junk.status_code == 400

    src = write_csv(tmp_path / "c.csv", [("27821000001", "a"), ("27821000002", "b")])
    out = bs("run", str(src), "--text", "Hi", sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert [r["to"] for r in records(simulator)] == ["27821000002"]
