"""Delivery receipts: the callback receiver over real HTTP, querymsg tracking, cost, the schema.

Store behaviour runs on SQLite, PostgreSQL and MariaDB (``db_url``); the end-to-end tests run a
campaign against the simulator, which posts real callbacks to a running receiver.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures_cli import write_csv
from fixtures_db import fresh_db_url
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from batch_sender.delivery import cost
from batch_sender.delivery.callbacks import (
    MAX_BODY,
    BadCallback,
    CallbackAuth,
    CallbackServer,
    parse_callback,
)
from batch_sender.errors import RunStopped
from batch_sender.gateway import Credentials, GatewayClient
from batch_sender.gateway import delivery_codes as statuses
from batch_sender.simulator import Simulator
from batch_sender.states import Status
from batch_sender.store import Campaign, Outcome, StagedRow, Store, migrate
from batch_sender.store.delivery import Applied, DeliveryReport, DeliveryStore
from batch_sender.store.engine import begin_write
from batch_sender.store.tables import delivery_events, receipt_inbox, recipients

T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


# -- helpers (also used by test_report.py and test_html_report.py) -------------------------------


def sent_campaign(
    store: Store, n: int, *, name: str = "c", sent: int | None = None, start: int = 27821000000
) -> tuple[Campaign, list[tuple[int, str, str | None]]]:
    """A campaign of ``n`` rows claimed as one request ``cli-<name>``; the first ``sent`` rows
    recorded as sent with API ID ``api-<name>-<row>``, the rest left ``sending``.

    Returns the campaign and (recipient id, msisdn, api id or None) per row, in row order.
    """
    sent = n if sent is None else sent
    rows = [
        StagedRow(
            row_no=i + 1,
            msisdn=str(start + i),
            status=Status.PENDING,
            parts=1,
            digest="d1",
            wire_text="Hello",
        )
        for i in range(n)
    ]
    campaign, created = store.stage_campaign(
        name=name, source="test.csv", fingerprint="f", options={}, rows=rows
    )
    assert created
    cli_id = f"cli-{name}"[:32]
    chunk = store.claim_chunk(campaign.id, size=n, client_message_id=cli_id, worker="w")
    assert chunk is not None and len(chunk.recipients) == n
    out = []
    outcomes = []
    for i, r in enumerate(chunk.recipients):
        api_id = f"api-{name}-{i + 1}" if i < sent else None
        if api_id is not None:
            outcomes.append(Outcome(r.id, Status.SENT, api_message_id=api_id))
        out.append((r.id, r.msisdn, api_id))
    store.record(outcomes)
    return campaign, out


def snapshot(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every recipients and delivery_events row, to show that a request changed nothing."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(recipients).order_by(recipients.c.id)).all()
        events = conn.execute(select(delivery_events).order_by(delivery_events.c.id)).all()
    return [tuple(r) for r in rows], [tuple(e) for e in events]


def row_of(store: Store, recipient_id: int) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(select(recipients).where(recipients.c.id == recipient_id)).one()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Callable[..., CallbackServer]]:
    """Factory: ``receiver(store, auth=…)`` → a started receiver on a free port, stopped after."""
    started: list[CallbackServer] = []

    def start(store: Store, **kwargs: Any) -> CallbackServer:
        server = CallbackServer(DeliveryStore(store), **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'results.db'}") as opened:
        yield opened


# -- status codes -------------------------------------------------------------------------------


def test_status_order_lets_only_later_stages_replace_earlier_ones() -> None:
    assert statuses.supersedes("003", None)
    assert statuses.supersedes("004", "003")
    assert statuses.supersedes("003", "008")
    assert not statuses.supersedes("003", "004")
    assert not statuses.supersedes("007", "004")  # the first final status stays
    assert not statuses.supersedes("004", "004")
    assert statuses.normalise("4") == "004" and statuses.normalise("4x") is None
    assert statuses.name_of("007") == "Error delivering message"
    assert statuses.name_of("013") == "Status 013"


# -- parsing callbacks --------------------------------------------------------------------------


def test_a_get_callback_is_read_from_the_query() -> None:
    report = parse_callback(
        "api_id=123456&apiMsgId=abc&cliMsgId=cli1&to=27821000001&timestamp=1764072000"
        "&from=Shop&status=004&charge=0.8",
        b"",
    )
    assert report == DeliveryReport(
        status="004",
        api_message_id="abc",
        client_message_id="cli1",
        to="27821000001",
        status_at=datetime(2025, 11, 25, 12, 0, tzinfo=UTC),
        charge=0.8,
        source="callback",
    )


def test_a_post_form_and_both_json_variants_give_the_same_report() -> None:
    fields = {"apiMsgId": "abc", "cliMsgId": "", "to": "27821000001", "status": "3"}
    as_form = parse_callback("", str(httpx.QueryParams(fields)).encode(), "")
    as_data = parse_callback(
        "", str(httpx.QueryParams({"data": json.dumps({"callback": fields})})).encode(), ""
    )
    as_json = parse_callback("", json.dumps(fields).encode(), "application/json")
    lower = parse_callback("apimsgid=abc&to=27821000001&STATUS=003", b"")
    assert as_form == as_data == as_json == lower
    assert as_form.status == "003" and as_form.client_message_id is None


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("to=27821000001&status=004", "both missing"),
        ("apiMsgId=abc&status=delivered", "numeric"),
        ("apiMsgId=abc&status=0004", "numeric"),
        ("apiMsgId=abc", "numeric"),
        ("data=%7Bnot+json", "invalid JSON"),
    ],
)
def test_requests_that_are_not_callbacks_are_refused(query: str, why: str) -> None:
    with pytest.raises(BadCallback, match=why):
        parse_callback(query, b"")


def test_unusable_timestamps_and_charges_are_dropped_not_fatal() -> None:
    report = parse_callback("apiMsgId=a&status=004&timestamp=soon&charge=-1", b"")
    assert report.status_at is None and report.charge is None
    report = parse_callback("apiMsgId=a&status=004&timestamp=2026-11-25 10:00:00&charge=nan", b"")
    assert report.status_at == datetime(2026, 11, 25, 10, tzinfo=UTC) and report.charge is None


# -- the store, on every engine -----------------------------------------------------------------


def test_a_late_intermediate_status_never_replaces_a_final_one(store: Store) -> None:
    _, rows = sent_campaign(store, 1)
    rid, _, api = rows[0]
    deliveries = DeliveryStore(store)
    final = DeliveryReport("004", api, status_at=T0 + timedelta(seconds=9), charge=1.5)
    late = DeliveryReport("003", api, status_at=T0 + timedelta(seconds=2), charge=1.5)
    assert deliveries.record([final]) == [Applied.UPDATED]
    assert deliveries.record([late]) == [Applied.RECORDED]

    row = row_of(store, rid)
    assert (row.delivery_status, row.delivered_at, row.charge) == ("004", final.status_at, 1.5)
    assert [e["status"] for e in deliveries.events(rid)] == ["004", "003"]


def test_a_repeated_report_is_recorded_once(store: Store) -> None:
    _, rows = sent_campaign(store, 1)
    rid, _, api = rows[0]
    deliveries = DeliveryStore(store)
    report = DeliveryReport("003", api, status_at=T0, charge=1.0)
    assert deliveries.record([report, report]) == [Applied.UPDATED, Applied.DUPLICATE]
    before = snapshot(store)
    assert deliveries.record([report]) == [Applied.DUPLICATE]
    assert snapshot(store) == before
    assert len(deliveries.events(rid)) == 1


def test_a_receipt_overtaking_the_send_answer_matches_by_client_id_and_number(
    store: Store,
) -> None:
    """The claim stamped the client ID before the request left; the API ID comes later."""
    _, rows = sent_campaign(store, 3, sent=0)
    rid, msisdn, _ = rows[1]
    deliveries = DeliveryStore(store)
    report = DeliveryReport("003", "api-new", client_message_id="cli-c", to=msisdn)
    assert deliveries.record([report]) == [Applied.UPDATED]
    row = row_of(store, rid)
    assert (row.status, row.api_message_id, row.delivery_status) == ("sending", "api-new", "003")

    store.record([Outcome(rid, Status.SENT, api_message_id="api-new")])  # the answer arrives
    assert row_of(store, rid).status == "sent"
    assert row_of(store, rows[0][0]).delivery_status is None  # same request, other number


def test_a_receipt_for_an_unknown_outcome_proves_the_message_was_sent(store: Store) -> None:
    _, rows = sent_campaign(store, 1, sent=0)
    rid, msisdn, _ = rows[0]
    store.record([Outcome(rid, Status.UNKNOWN, error_description="read timeout")])
    DeliveryStore(store).record([DeliveryReport("004", "api-x", "cli-c", msisdn)])
    row = row_of(store, rid)
    assert (row.status, row.api_message_id, row.error_description) == ("sent", "api-x", None)


def test_reports_for_ids_nobody_has_change_nothing(store: Store) -> None:
    sent_campaign(store, 2)
    before = snapshot(store)
    applied = DeliveryStore(store).record(
        [
            DeliveryReport("004", "no-such-id"),
            DeliveryReport("004", None, "cli-c", "27800000000"),  # right request, wrong number
            DeliveryReport("004", "x" * 500, "y" * 500, "1" * 500),  # longer than any column
        ]
    )
    # an apiMsgId is kept for when a run records it (issue 16 item 3); the rest is dropped
    assert applied == [Applied.KEPT, Applied.UNKNOWN, Applied.UNKNOWN]
    assert snapshot(store) == before
    with store.engine.connect() as conn:
        kept = conn.execute(select(receipt_inbox.c.api_message_id, receipt_inbox.c.status)).all()
    assert [tuple(k) for k in kept] == [("no-such-id", "004")]


def test_track_reads_only_sent_rows_not_final_within_the_window(store: Store) -> None:
    campaign, rows = sent_campaign(store, 5, sent=4)
    deliveries = DeliveryStore(store)
    deliveries.record([DeliveryReport("004", rows[0][2]), DeliveryReport("003", rows[1][2])])
    with begin_write(store.engine) as conn:  # row 3 was sent a week ago
        conn.execute(
            update(recipients)
            .where(recipients.c.id == rows[2][0])
            .values(claimed_at=datetime.now(UTC) - timedelta(days=7))
        )
    waiting = deliveries.awaiting(campaign.id, sent_after=datetime.now(UTC) - timedelta(days=6))
    assert [(t.recipient_id, t.delivery_status) for t in waiting] == [
        (rows[1][0], "003"),
        (rows[3][0], None),
    ]
    assert (
        deliveries.awaiting(campaign.id, after_id=rows[1][0], limit=1)[0].recipient_id
        == (rows[2][0])
    )


def test_concurrent_identical_callbacks_are_recorded_once(
    store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    """The gateway retries; racing duplicates are serialised by the row lock on every engine."""
    _, rows = sent_campaign(store, 1)
    rid, msisdn, api = rows[0]
    server = receiver(store)
    form = {
        "apiMsgId": api,
        "to": msisdn,
        "status": "004",
        "charge": "1",
        "timestamp": "1764072000",
    }
    barrier = threading.Barrier(8)
    answers: list[int] = []

    def post() -> None:
        barrier.wait()
        answers.append(httpx.post(server.url, data=form, timeout=30).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 8
    assert len(DeliveryStore(store).events(rid)) == 1
    assert (server.stats.updated, server.stats.duplicates) == (1, 7)


def test_a_campaign_created_while_the_receiver_runs_is_matched_at_once(
    store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    """The writer keeps the campaign ids its lookups name between batches; a receipt for a
    campaign created since is looked up again with the new list, not kept as unknown."""
    _, first = sent_campaign(store, 1, name="a")
    server = receiver(store)
    rid, msisdn, api = first[0]
    answer = httpx.post(server.url, data={"apiMsgId": api, "to": msisdn, "status": "004"})
    assert answer.text.strip() == "updated"
    _, later = sent_campaign(store, 2, name="b", start=27822000000)
    for (rid, msisdn, api), form in zip(
        later,
        [{"cliMsgId": "cli-b"}, {}],  # by cliMsgId + number; by apiMsgId among the number's rows
        strict=True,
    ):
        answer = httpx.post(
            server.url, data={"apiMsgId": api, "to": msisdn, "status": "004", **form}
        )
        assert (answer.status_code, answer.text.strip()) == (200, "updated")
        assert row_of(store, rid).delivery_status == "004"
    assert inbox_rows(store) == []


def _kill_other_sessions(store: Store) -> int:
    """Make the server end every other session on this test's database (as a restart does)."""
    url = store.engine.url
    with (
        Store.open(url.render_as_string(hide_password=False)) as admin,
        admin.engine.connect() as conn,
    ):
        if url.get_backend_name() == "postgresql":
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :app AND pid <> pg_backend_pid()"
                ),
                {"app": url.query["application_name"]},
            ).scalar_one()
        else:
            ids = conn.execute(
                text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = :db AND id <> CONNECTION_ID()"
                ),
                {"db": url.database},
            ).scalars()
            killed = 0
            for session in list(ids):
                conn.execute(text(f"KILL {int(session)}"))
                killed += 1
    return int(killed)


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_the_writer_reconnects_when_the_server_drops_its_connection(
    kind: str, tmp_path: Path, receiver: Callable[..., CallbackServer]
) -> None:
    """The writer holds one connection across batches: one the server ended (a restart, an idle
    timeout) is replaced for the next batch, and that batch is still answered 2xx, not 503."""
    gen = fresh_db_url(kind, tmp_path)
    url = next(gen)
    if kind == "postgresql":
        url = (
            make_url(url)
            .update_query_dict({"application_name": f"bs-writer-{os.getpid()}"})
            .render_as_string(hide_password=False)
        )
    try:
        with Store.open(url) as store:
            _, rows = sent_campaign(store, 2)
            server = receiver(store)
            first = {"apiMsgId": rows[0][2], "to": rows[0][1], "status": "004"}
            assert httpx.post(server.url, data=first).text.strip() == "updated"
            assert _kill_other_sessions(store) >= 1  # the writer's held connection among them
            second = {"apiMsgId": rows[1][2], "to": rows[1][1], "status": "004"}
            answer = httpx.post(server.url, data=second, timeout=30)
            assert (answer.status_code, answer.text.strip()) == (200, "updated")
            again = httpx.post(server.url, data=second, timeout=30)
            assert (again.status_code, again.text.strip()) == (200, "duplicate")
            assert server.stats.errors == 0
            assert [row_of(store, rid).delivery_status for rid, _, _ in rows] == ["004", "004"]
            server.stop()
    finally:
        gen.close()


def test_the_delivery_revision_downgrades_and_upgrades_keeping_recipients(store: Store) -> None:
    _, rows = sent_campaign(store, 2)
    DeliveryStore(store).record([DeliveryReport("004", rows[0][2], charge=1.0)])
    with begin_write(store.engine) as conn:
        migrate.downgrade(conn, "0001_initial_schema")
    with store.engine.connect() as conn:
        old = conn.execute(text("SELECT row_no, status FROM results ORDER BY row_no")).all()
    assert [tuple(r) for r in old] == [(1, "sent"), (2, "sent")]
    with begin_write(store.engine) as conn:
        migrate.upgrade(conn)
    with store.engine.connect() as conn:
        new = conn.execute(
            text("SELECT row_no, delivery_status, charge FROM results ORDER BY row_no")
        ).all()
    assert [tuple(r) for r in new] == [(1, None, None), (2, None, None)]


# -- the receiver over HTTP ---------------------------------------------------------------------


def results_rows(path: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM results ORDER BY row_no")]
    con.close()
    return rows


def test_simulator_callbacks_give_every_row_its_final_status(
    bs: Any,
    make_simulator: Callable[..., Simulator],
    receiver: Callable[..., CallbackServer],
    sqlite_store: Store,
    tmp_path: Path,
) -> None:
    server = receiver(sqlite_store)
    sim = make_simulator(
        callback_url=server.url + "clickatell/status",
        delivery_delays=(0.05, 0.1),
        undeliverable_prefixes=("2782100001",),  # 27821000010-19: status 007
        rates={"27821": 0.8},
    )
    numbers = [str(27821000000 + i) for i in range(40)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
    out = bs("run", str(src), "--text", "Hi", "--name", "cb", "--callback", "3", sim=sim)
    assert out.exit_code == 0, out.stderr

    db = tmp_path / "results.db"

    def all_final() -> bool:
        return all(r["delivery_status"] in ("004", "007") for r in results_rows(db))

    wait_until(all_final)
    wait_until(lambda: sim.callbacks_posted == 80)  # and every 003, which may come last
    rows = results_rows(db)
    assert len(rows) == 40
    for row in rows:
        undeliverable = row["msisdn"].startswith("2782100001")
        assert row["status"] == "sent"
        assert row["delivery_status"] == ("007" if undeliverable else "004")
        assert row["delivery_status_name"] == (
            "Error delivering message" if undeliverable else "Received by recipient"
        )
        assert row["delivered_at"] is not None and row["charge"] == pytest.approx(0.8)
    con = sqlite3.connect(db)
    history = dict(con.execute("SELECT status, COUNT(*) FROM delivery_events GROUP BY status"))
    summary = con.execute(
        "SELECT recipients, delivered, undelivered, charge FROM campaign_summary"
    ).fetchone()
    con.close()
    assert history == {"003": 40, "004": 30, "007": 10}
    assert tuple(summary) == (40, 30, 10, pytest.approx(32.0))

    report = json.loads(bs("report", "cb", "--format", "json").stdout)["delivery"]
    assert (report["delivered"], report["failed"], report["unknown"]) == (30, 10, 0)
    assert report["delivery_rate"] == 0.75 and report["cost"]["credits"] == pytest.approx(32.0)


def test_duplicate_and_out_of_order_callbacks_over_http(
    sqlite_store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    _, rows = sent_campaign(sqlite_store, 1)
    rid, msisdn, api = rows[0]
    server = receiver(sqlite_store)
    final = {"apiMsgId": api, "to": msisdn, "status": "004", "timestamp": "1764072010"}
    late = {**final, "status": "003", "timestamp": "1764072000"}
    with httpx.Client() as http:
        answers = [
            http.post(server.url + "cb", data=final),
            http.get(server.url + "cb", params=late),
            http.post(server.url + "cb", data=final),  # the gateway retrying
        ]
    assert [(a.status_code, a.text.strip()) for a in answers] == [
        (200, "updated"),
        (200, "recorded"),
        (200, "duplicate"),
    ]
    row = row_of(sqlite_store, rid)
    assert row.delivery_status == "004"
    assert row.delivered_at == datetime.fromtimestamp(1764072010, UTC)
    assert [e["status"] for e in DeliveryStore(sqlite_store).events(rid)] == ["004", "003"]


def test_unknown_ids_are_answered_202_and_kept_in_the_inbox_only(
    sqlite_store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    sent_campaign(sqlite_store, 1)
    server = receiver(sqlite_store)
    before = snapshot(sqlite_store)
    answer = httpx.post(server.url, data={"apiMsgId": "nobody", "status": "004"})
    assert (answer.status_code, answer.text.strip()) == (202, "kept")
    assert snapshot(sqlite_store) == before
    assert inbox_rows(sqlite_store) == [("nobody", "004")]


def inbox_rows(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(receipt_inbox.c.api_message_id, receipt_inbox.c.status).order_by(
                receipt_inbox.c.id
            )
        ).all()
    return [(str(a), str(s)) for a, s in rows]


@pytest.mark.parametrize(
    "request_kw",
    [
        pytest.param({"data": {"status": "004", "to": "27821000000"}}, id="no message id"),
        pytest.param({"data": {"apiMsgId": "api-c-1", "status": "OK"}}, id="status not numeric"),
        pytest.param(
            {"content": b"apiMsgId=api-c-1&status=004&pad=" + b"x" * MAX_BODY}, id="oversized"
        ),
        pytest.param({"content": b"\xff\xfe apiMsgId=api-c-1&status=004"}, id="not utf-8"),
    ],
)
def test_bad_requests_are_answered_400_without_touching_the_database(
    sqlite_store: Store, receiver: Callable[..., CallbackServer], request_kw: dict[str, Any]
) -> None:
    sent_campaign(sqlite_store, 1)
    server = receiver(sqlite_store)
    before = snapshot(sqlite_store)
    answer = httpx.post(server.url, **request_kw)
    assert answer.status_code == 400
    assert snapshot(sqlite_store) == before
    assert server.stats.bad == 1


def test_sql_in_the_parameters_is_just_an_unknown_id(
    sqlite_store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    _, rows = sent_campaign(sqlite_store, 2)
    server = receiver(sqlite_store)
    before = snapshot(sqlite_store)
    hostile = {
        "apiMsgId": "x' OR '1'='1",
        "cliMsgId": "cli-c' OR 1=1; DROP TABLE recipients; --",
        "to": f"{rows[0][1]}' OR '1'='1",
        "status": "004",
        "charge": "1; DELETE FROM delivery_events",
        "timestamp": "0); DROP TABLE campaigns; --",
    }
    answer = httpx.get(server.url, params=hostile)
    assert (answer.status_code, answer.text.strip()) == (202, "kept")  # as data, in the inbox
    assert snapshot(sqlite_store) == before
    assert inbox_rows(sqlite_store) == [(hostile["apiMsgId"], "004")]
    assert sqlite_store.campaign("c") is not None


def test_a_database_failure_is_answered_503_so_the_gateway_retries(
    sqlite_store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    _, rows = sent_campaign(sqlite_store, 1)
    server = receiver(sqlite_store)
    with begin_write(sqlite_store.engine) as conn:  # the history table is gone
        conn.execute(text("ALTER TABLE delivery_events RENAME TO delivery_events_away"))
    answer = httpx.post(server.url, data={"apiMsgId": rows[0][2], "status": "004"})
    assert answer.status_code == 503
    assert row_of(sqlite_store, rows[0][0]).delivery_status is None  # rolled back
    with begin_write(sqlite_store.engine) as conn:
        conn.execute(text("ALTER TABLE delivery_events_away RENAME TO delivery_events"))
    retried = httpx.post(server.url, data={"apiMsgId": rows[0][2], "status": "004"})
    assert retried.status_code == 200
    assert row_of(sqlite_store, rows[0][0]).delivery_status == "004"


def test_a_token_is_required_when_configured(
    sqlite_store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    _, rows = sent_campaign(sqlite_store, 1)
    server = receiver(sqlite_store, auth=CallbackAuth(token="s3cret-token"))
    form = {"apiMsgId": rows[0][2], "status": "004"}
    before = snapshot(sqlite_store)
    assert httpx.post(server.url, data=form).status_code == 401
    assert httpx.post(server.url + "?token=wrong", data=form).status_code == 403
    assert httpx.post(server.url, data=form, headers={"X-Callback-Token": "s3"}).status_code == 403
    assert snapshot(sqlite_store) == before
    assert httpx.post(server.url + "?token=s3cret-token", data=form).status_code == 200
    assert row_of(sqlite_store, rows[0][0]).delivery_status == "004"


def test_basic_auth_is_required_when_configured(
    sqlite_store: Store, receiver: Callable[..., CallbackServer]
) -> None:
    _, rows = sent_campaign(sqlite_store, 1)
    server = receiver(sqlite_store, auth=CallbackAuth(user="clickatell", password="pw"))
    form = {"apiMsgId": rows[0][2], "status": "003"}
    missing = httpx.post(server.url, data=form)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Basic")
    assert httpx.post(server.url, data=form, auth=("clickatell", "nope")).status_code == 403
    garbage = {"Authorization": "Basic %%%"}
    assert httpx.post(server.url, data=form, headers=garbage).status_code == 403
    assert row_of(sqlite_store, rows[0][0]).delivery_status is None
    good = "Basic " + base64.b64encode(b"clickatell:pw").decode()
    assert httpx.post(server.url, data=form, headers={"Authorization": good}).status_code == 200
    assert row_of(sqlite_store, rows[0][0]).delivery_status == "003"


def test_the_callbacks_command_serves_until_terminated(tmp_path: Path) -> None:
    """The console script as an operator starts it: bound, recording, stopped by SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'results.db'}"
    with Store.open(db) as store:
        _, rows = sent_campaign(store, 1)
    exe = str(Path(sys.executable).parent / "batch-sender")
    proc = subprocess.Popen(
        [exe, "callbacks", "--port", str(port), "--token", "t0k"],
        env={**os.environ, "BATCH_SENDER_DB": db},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/dlr?token=t0k"
        wait_until(lambda: _answers(url), timeout=20)
        query = {"token": "t0k", "apiMsgId": rows[0][2], "status": "4"}
        assert httpx.get(url, params=query).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "1 updated" in err
    with Store.open(db) as store:
        assert row_of(store, rows[0][0]).delivery_status == "004"


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


# -- tracking with querymsg ---------------------------------------------------------------------


def test_track_settles_every_sent_row_with_querymsg(
    bs: Any, make_simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    sim = make_simulator(delivery_delays=(0.01, 0.02), undeliverable_prefixes=("27821000003",))
    src = write_csv(tmp_path / "c.csv", [(str(27821000000 + i), "x") for i in range(6)])
    assert bs("run", str(src), "--text", "Hi", "--name", "t", sim=sim).exit_code == 0
    db = tmp_path / "results.db"
    con = sqlite3.connect(db)
    with con:  # row 6 was sent a week ago: outside querymsg's window
        con.execute(
            "UPDATE recipients SET claimed_at = ? WHERE row_no = 6",
            ((datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S"),),
        )
    con.close()
    time.sleep(0.05)  # past the simulated final delay

    out = bs("track", "t", "--rate", "100", sim=sim)
    assert out.exit_code == 0, out.stderr
    assert "asked about 5 messages: 5 updated, 5 final" in out.stdout
    statuses_by_row = {r["row_no"]: r["delivery_status"] for r in results_rows(db)}
    assert statuses_by_row == {1: "004", 2: "004", 3: "004", 4: "007", 5: "004", 6: None}
    con = sqlite3.connect(db)
    assert con.execute("SELECT DISTINCT source FROM delivery_events").fetchall() == [("querymsg",)]
    con.close()
    again = bs("track", "t", sim=sim)  # nothing left to ask about
    assert "asked about 0 messages" in again.stdout


def test_track_keeps_to_its_rate_and_repeats_until_final(
    bs: Any, make_simulator: Callable[..., Simulator], tmp_path: Path
) -> None:
    """Lower bound only: 10 queries at 20/s cannot finish before 9 intervals of 50 ms."""
    sim = make_simulator(delivery_delays=(0.3, 0.6))
    src = write_csv(tmp_path / "c.csv", [(str(27821000000 + i), "x") for i in range(10)])
    assert bs("run", str(src), "--text", "Hi", "--name", "t", sim=sim).exit_code == 0
    started = time.monotonic()
    out = bs(
        "track",
        "t",
        "--rate",
        "20",
        "--until-final",
        "--interval",
        "0.2",
        "--timeout",
        "20",
        sim=sim,
    )
    assert out.exit_code == 0, out.stderr
    assert time.monotonic() - started >= 0.45
    assert {r["delivery_status"] for r in results_rows(tmp_path / "results.db")} == {"004"}


# -- cost -----------------------------------------------------------------------------------------


def client_for(sim: Simulator, **overrides: str) -> GatewayClient:
    creds = sim.credentials
    values = {"api_id": creds.api_id, "user": creds.user, "password": creds.password, **overrides}
    return GatewayClient(url=sim.url, credentials=Credentials(**values), max_connections=1)


def dead_client() -> GatewayClient:
    return GatewayClient(
        url="http://127.0.0.1:9/soap/document_literal/webservice",
        credentials=Credentials("1", "u", "p"),
        timeout=httpx.Timeout(2.0),
    )


def tally() -> cost.PrefixTally:
    t = cost.PrefixTally()
    for msisdn, parts in [
        ("27821000001", 1),
        ("27821000002", 2),
        ("27821999999", 1),
        ("447712345678", 1),
        ("447799999999", 3),  # another prefix, same rate
        ("27831234567", 1),  # not routed
        ("33612345678", 2),  # default rate
    ]:
        t.add(msisdn, parts)
    return t


def test_the_estimate_prices_parts_per_prefix_with_routecoverage(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(rates={"27821": 0.8, "4477": 2.0}, unroutable_prefixes=("2783",))
    cache: dict[str, float | None] = {}
    with client_for(sim) as client:
        est = cost.estimate(client, tally(), cache=cache)
    by_prefix = {p.prefix: (p.recipients, p.parts, p.credits_per_part) for p in est.prefixes}
    assert by_prefix == {
        "27821": (3, 4, 0.8),
        "44771": (1, 1, 2.0),
        "44779": (1, 3, 2.0),
        "27831": (1, 1, None),
        "33612": (1, 2, 1.0),
    }
    assert est.credits == pytest.approx(4 * 0.8 + 4 * 2.0 + 2 * 1.0)
    assert est.unrouted_recipients == 1 and est.fallback_prefixes == ()
    assert set(cache) == set(by_prefix)

    with dead_client() as unreachable:  # everything cached: the gateway is not asked again
        again = cost.estimate(unreachable, tally(), cache=cache)
    assert again == est


def test_the_estimate_falls_back_to_one_credit_per_part(
    make_simulator: Callable[..., Simulator],
) -> None:
    with dead_client() as client:
        est = cost.estimate(client, {"27821": ("27821000001", 5), "44771": ("447712345678", 2)})
    assert est.credits == 7.0 and est.fallback_prefixes == ("27821", "44771")

    sim = make_simulator()
    with client_for(sim, password="wrong") as client, pytest.raises(RunStopped):
        cost.estimate(client, tally())  # auth problems are not priced around


def test_a_short_balance_refuses_the_run_unless_partial_is_allowed(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(rates={"27821": 0.8, "4477": 2.0})
    sim.set_credits(10.0)
    with client_for(sim) as client:
        est = cost.estimate(client, tally())  # 14.2 credits (2783… routed at the default 1)
        with pytest.raises(cost.InsufficientCredit, match="short by 4.2") as refused:
            cost.check_balance(client, est)
        assert refused.value.exit_code == 3
        partial = cost.check_balance(client, est, allow_partial=True)
        assert (partial.balance, partial.short_by, partial.enough) == (
            10.0,
            pytest.approx(4.2),
            False,
        )
        assert cost.check_balance(client, 9.5).enough


def test_the_pending_tally_groups_parts_by_prefix_in_sql(store: Store) -> None:
    """The input of the estimate before a real run: the staged, still pending rows."""
    rows = [("27821000001", 1), ("27821999999", 2), ("447712345678", 3), ("27831234567", 1)]
    staged = [
        StagedRow(
            row_no=i + 1,
            msisdn=m,
            status=Status.PENDING,
            parts=p,
            digest=f"d{p}",
            wire_text="x" * p,
        )
        for i, (m, p) in enumerate(rows)
    ]
    campaign, _ = store.stage_campaign(
        name="t", source="s", fingerprint="f", options={}, rows=staged
    )
    expected = cost.PrefixTally()
    for msisdn, parts in rows:
        expected.add(msisdn, parts)

    tally = DeliveryStore(store).pending_tally(campaign.id)
    assert (tally.parts, tally.recipients) == (expected.parts, expected.recipients)
    assert tally.sample == {"27821": "27821000001", "44771": "447712345678", "27831": "27831234567"}


def test_the_callbacks_command_reports_a_port_in_use_and_bad_auth_options(bs: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = bs("callbacks", "--port", str(taken.getsockname()[1]))
    assert out.exit_code == 2 and "cannot listen on 127.0.0.1:" in out.stderr
    out = bs("callbacks", "--basic-auth", "no-colon")
    assert out.exit_code == 2 and "USER:PASSWORD" in out.stderr
