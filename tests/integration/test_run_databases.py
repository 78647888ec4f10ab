"""`batch-sender run` end to end on every results database, and from every SQL source database.

The key behaviours of tests/test_run.py with ``BATCH_SENDER_DB`` on SQLite, PostgreSQL and MariaDB
(``db_url``), read back through the ``results`` and ``campaign_summary`` views with SQLAlchemy as
a report tool would; then ``run --sql`` reading recipients from each of the three databases.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fixtures_cli import CliResult, write_csv
from fixtures_db import MARIADB_URL, POSTGRES_URL, require
from sqlalchemy.engine import make_url

from batch_sender import sms
from batch_sender.simulator import Simulator

Bs = Callable[..., CliResult]


def results(db_url: str, campaign: str | None = None) -> list[dict[str, Any]]:
    """The ``results`` view, in source order."""
    sql = "SELECT * FROM results"
    params: dict[str, str] = {}
    if campaign is not None:
        sql += " WHERE campaign = :campaign"
        params["campaign"] = campaign
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [
                dict(r) for r in conn.execute(sa.text(sql + " ORDER BY row_no"), params).mappings()
            ]
    finally:
        engine.dispose()


def summary(db_url: str, campaign: str) -> dict[str, int]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT status, recipients FROM campaign_summary WHERE campaign = :c"),
                {"c": campaign},
            )
            return {status: int(n) for status, n in rows}
    finally:
        engine.dispose()


def records(sim: Simulator) -> list[dict[str, Any]]:
    path = Path(str(sim.config.record))
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def numbers(n: int, start: int = 27821000000) -> list[str]:
    return [str(start + i) for i in range(n)]


@pytest.fixture
def run_on(bs: Bs, db_url: str) -> Callable[..., CliResult]:
    """``batch-sender`` in-process with its results database on ``db_url``."""

    def invoke(*args: str, sim: Simulator) -> CliResult:
        return bs(*args, sim=sim, env={"BATCH_SENDER_DB": db_url})

    return invoke


# -- CSV source, results on each database ------------------------------------------------------


def test_every_recipient_gets_the_id_the_simulator_recorded(
    run_on: Callable[..., CliResult], db_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "c.csv", [(n, f"N{i}") for i, n in enumerate(numbers(250))])

    out = run_on("run", str(src), "--text", "Hi {name}", "--name", "c1", sim=simulator)

    assert out.exit_code == 0, out.stderr
    rows = results(db_url, "c1")
    assert len(rows) == 250
    assert {r["status"] for r in rows} == {"sent"}
    recorded = {rec["to"]: rec for rec in records(simulator)}
    assert len(recorded) == 250
    for row in rows:
        rec = recorded[row["msisdn"]]
        assert row["api_message_id"] == rec["api_message_id"]
        assert row["client_message_id"] == rec["client_message_id"]
        assert rec["text"] == f"Hi N{row['row_no'] - 1}"
        assert (row["attempts"], row["parts"]) == (1, 1)


def test_rejected_and_duplicate_rows_are_stored_and_never_sent(
    run_on: Callable[..., CliResult], db_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    rows = [
        ("082 100 2000", "national"),
        ("+27 82 100 2000", "same number"),
        ("27821002001", "plain"),
        ("not a number", "junk"),
    ]
    src = write_csv(tmp_path / "c.csv", rows)

    out = run_on("run", str(src), "--text", "Hi", "--country", "ZA", "--name", "n", sim=simulator)

    assert out.exit_code == 1, out.stderr  # finished, one rejected
    got = results(db_url, "n")
    assert [r["status"] for r in got] == ["sent", "duplicate", "sent", "rejected"]
    assert [r["msisdn"] for r in got[:3]] == ["27821002000", "27821002000", "27821002001"]
    assert got[3]["error_description"] and got[3]["api_message_id"] is None
    assert sorted(rec["to"] for rec in records(simulator)) == ["27821002000", "27821002001"]


def test_per_destination_errors_are_stored_with_code_and_description(
    run_on: Callable[..., CliResult],
    db_url: str,
    make_simulator: Callable[..., Simulator],
    tmp_path: Path,
) -> None:
    sim = make_simulator(number_errors={"27821000003": "121", "2782100001": "122"})
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(20)])

    out = run_on("run", str(src), "--text", "Hi", "--name", "e", sim=sim)

    assert out.exit_code == 1, out.stderr
    rows = {r["msisdn"]: r for r in results(db_url, "e")}
    assert (rows["27821000003"]["status"], rows["27821000003"]["error_code"]) == ("failed", "121")
    assert "blocked" in rows["27821000003"]["error_description"].lower()
    assert sorted(m for m, r in rows.items() if r["error_code"] == "122") == numbers(
        10, 27821000010
    )
    sent = {m for m, r in rows.items() if r["status"] == "sent"}
    assert sent == {rec["to"] for rec in records(sim)}
    assert len(sent) == 20 - 11


def test_running_the_same_campaign_again_sends_nothing_again(
    run_on: Callable[..., CliResult], db_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(120)])
    first = run_on("run", str(src), "--text", "Hi", "--name", "again", sim=simulator)
    assert first.exit_code == 0, first.stderr

    second = run_on("run", str(src), "--text", "Hi", "--name", "again", sim=simulator)

    assert second.exit_code == 0, second.stderr
    assert len(records(simulator)) == 120
    assert len(results(db_url, "again")) == 120


def test_summary_view_counts_each_status(
    run_on: Callable[..., CliResult], db_url: str, simulator: Simulator, tmp_path: Path
) -> None:
    src = write_csv(
        tmp_path / "c.csv",
        [("27821000001", ""), ("27821000001", ""), ("junk", ""), ("27821000002", "")],
    )

    run_on("run", str(src), "--text", "Hi", "--name", "s", sim=simulator)

    assert summary(db_url, "s") == {"sent": 2, "duplicate": 1, "rejected": 1}


# -- SQL source on each database ---------------------------------------------------------------


@pytest.fixture
def crm_table(db_url: str) -> Iterator[str]:
    """A ``crm_<hex>`` table of 30 customers (one with a bad number) in the ``db_url`` database."""
    table = f"crm_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(db_url)
    meta = sa.MetaData()
    crm = sa.Table(
        table,
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mobile", sa.String(20)),
        sa.Column("first_name", sa.String(50)),
        sa.Column("opted_in", sa.Boolean),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            crm.insert(),
            [
                {
                    "id": i,
                    "mobile": "n/a" if i == 7 else f"2782200{i:04d}",
                    "first_name": f"Zoë{i}",
                    "opted_in": i % 10 != 0,
                }
                for i in range(1, 31)
            ],
        )
    try:
        yield table
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_sql_source_runs_end_to_end_on_each_database(
    run_on: Callable[..., CliResult], db_url: str, crm_table: str, simulator: Simulator
) -> None:
    query = f"SELECT mobile, first_name FROM {crm_table} WHERE opted_in = 1 ORDER BY id"
    if make_url(db_url).get_backend_name() == "postgresql":
        query = query.replace("= 1", "")  # a boolean is a condition by itself there

    out = run_on(
        "run",
        "--sql",
        query,
        "--source-db",
        db_url,
        "--to-column",
        "mobile",
        "--name",
        "crm",
        "--text",
        "Hi {first_name}",
        sim=simulator,
    )

    assert out.exit_code == 1, out.stderr  # finished, the bad number rejected
    rows = results(db_url, "crm")
    assert len(rows) == 27  # customers 10, 20, 30 opted out
    assert [r["status"] for r in rows].count("rejected") == 1
    texts = {rec["to"]: rec["text"] for rec in records(simulator)}
    assert len(texts) == 26
    assert sms.from_ucs2_hex(texts["27822000001"]) == "Hi Zoë1"  # ë is not GSM: UCS-2


@pytest.mark.parametrize(
    ("kind", "url", "message"),
    [
        (
            "postgresql",
            "postgresql+psycopg://postgres:S3cret-Pw@127.0.0.1:5432/no_such_db_bs",
            'database "no_such_db_bs" does not exist',
        ),
        (
            "mariadb",
            "mysql+pymysql://root:S3cret-Pw@127.0.0.1:3306/test",
            "Access denied for user 'root'",
        ),
        ("sqlite", "sqlite:////no/such/directory/crm.db", "unable to open database file"),
    ],
)
def test_a_source_database_that_refuses_exits_2_with_its_message_and_no_password(
    bs: Bs, simulator: Simulator, kind: str, url: str, message: str
) -> None:
    if kind == "postgresql":
        require("PostgreSQL", POSTGRES_URL)
    elif kind == "mariadb":
        require("MariaDB", MARIADB_URL)

    out = bs("run", "--sql", "SELECT 1 AS to", "--source-db", url, "--name", "x", "--text", "Hi",
             sim=simulator)  # fmt: skip

    assert out.exit_code == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "S3cret-Pw" not in out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert simulator.requests == 0


def test_a_failing_query_exits_2_with_the_database_message(
    run_on: Callable[..., CliResult], db_url: str, simulator: Simulator
) -> None:
    out = run_on("run", "--sql", "SELECT mobile FROM no_such_table_bs", "--source-db", db_url,
                 "--name", "q", "--text", "Hi", sim=simulator)  # fmt: skip

    assert out.exit_code == 2, out.stdout + out.stderr
    assert "query failed" in out.stderr and "no_such_table_bs" in out.stderr
    assert "Traceback" not in out.stderr
    assert simulator.requests == 0
    engine = sa.create_engine(db_url)
    try:
        assert not sa.inspect(engine).has_table("campaigns")  # the store was never even opened
    finally:
        engine.dispose()
