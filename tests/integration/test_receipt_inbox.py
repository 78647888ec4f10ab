"""Receipts that overtake the send answer are kept and applied exactly once (issue 16, item 3).

On ``main`` before this, a receipt carrying only an apiMsgId that arrived before the run had
recorded that ID was answered ``200 unknown`` and dropped: the gateway never sends it again.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv
from sqlalchemy import func, select

from batch_sender.simulator import Simulator
from batch_sender.states import Status
from batch_sender.store import Outcome, StagedRow, Store
from batch_sender.store.delivery import Applied, DeliveryReport, DeliveryStore
from batch_sender.store.tables import delivery_events, receipt_inbox, recipients

N = 1000  # messages of the flood


def staged(store: Store, n: int = 3) -> list[tuple[int, str]]:
    """A campaign of ``n`` claimed rows (sending, no API ID yet): (recipient id, number)."""
    rows = [
        StagedRow(
            row_no=i + 1,
            msisdn=str(27820000000 + i),
            status=Status.PENDING,
            parts=1,
            digest="d1",
            wire_text="Hi",
        )
        for i in range(n)
    ]
    campaign, _ = store.stage_campaign(
        name="c", source="t.csv", fingerprint="f", options={}, rows=rows
    )
    chunk = store.claim_chunk(campaign.id, size=n, client_message_id="cli-c", worker="w")
    assert chunk is not None
    return [(r.id, r.msisdn) for r in chunk.recipients]


def history(store: Store, rid: int) -> list[str]:
    return [e["status"] for e in DeliveryStore(store).events(rid)]


def inbox_size(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(receipt_inbox)).scalar_one())


def delivery_of(store: Store, rid: int) -> tuple[str, str | None]:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(recipients.c.status, recipients.c.delivery_status).where(recipients.c.id == rid)
        ).one()
    return row[0], row[1]


@pytest.mark.parametrize("with_number", [True, False], ids=["api+to", "api-only"])
def test_a_receipt_before_the_record_is_kept_then_applied_once(
    store: Store, with_number: bool
) -> None:
    (rid, msisdn), (other, _), _ = staged(store)
    deliveries = DeliveryStore(store)
    to = msisdn if with_number else None
    early = [DeliveryReport("003", "api-1", to=to), DeliveryReport("004", "api-1", to=to)]
    assert deliveries.record(early) == [Applied.KEPT, Applied.KEPT]
    assert deliveries.record(early[1:]) == [Applied.DUPLICATE]  # the gateway retrying
    assert history(store, rid) == [] and inbox_size(store) == 2

    store.record([Outcome(rid, Status.SENT, api_message_id="api-1")])  # the answer arrives
    assert history(store, rid) == ["003", "004"]
    assert delivery_of(store, rid) == ("sent", "004")
    assert inbox_size(store) == 0
    store.record([Outcome(rid, Status.SENT, api_message_id="api-1")])  # recorded again: nothing
    assert history(store, rid) == ["003", "004"]
    assert history(store, other) == []
    # after the record: straight to the row, a repeat is a duplicate
    assert deliveries.record([DeliveryReport("004", "api-1", to=to)]) == [Applied.DUPLICATE]


def test_a_receipt_kept_by_api_id_applies_when_a_cli_receipt_teaches_the_id(store: Store) -> None:
    (rid, msisdn), *_ = staged(store)
    deliveries = DeliveryStore(store)
    assert deliveries.record([DeliveryReport("004", "api-9")]) == [Applied.KEPT]
    by_cli = DeliveryReport("003", "api-9", client_message_id="cli-c", to=msisdn)
    assert deliveries.record([by_cli]) == [Applied.UPDATED]
    assert history(store, rid) == ["003", "004"] and inbox_size(store) == 0
    assert delivery_of(store, rid) == ("sending", "004")


def test_an_id_recorded_elsewhere_is_found_by_the_sweep(store: Store) -> None:
    """Recorded by a path that does not look at the inbox (here: raw SQL)."""
    (rid, _), *_ = staged(store)
    deliveries = DeliveryStore(store)
    assert deliveries.record([DeliveryReport("004", "api-5")]) == [Applied.KEPT]
    with store.engine.begin() as conn:
        conn.execute(
            recipients.update()
            .where(recipients.c.id == rid)
            .values(status="sent", api_message_id="api-5")
        )
    assert deliveries.sweep() == 0  # not due yet
    from datetime import UTC, datetime, timedelta

    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=3)
    assert deliveries.sweep(now=later) == 1
    assert history(store, rid) == ["004"] and inbox_size(store) == 0


# -- a real run, the real receiver, a flood of receipts during the run ------------------------


@pytest.fixture
def callbacks_process(tmp_path: Path) -> Iterator[Callable[[str], tuple[str, Any]]]:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    procs: list[subprocess.Popen[str]] = []

    def start(db_url: str) -> tuple[str, subprocess.Popen[str]]:
        env = {**os.environ, "BATCH_SENDER_DB": db_url}
        proc = subprocess.Popen(
            [exe, "callbacks", "--port", "0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.search(r"receiving delivery callbacks at (\S+)", line)
            if match:
                return match[1], proc
        raise AssertionError("the receiver did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("omit", [("cliMsgId",), ("cliMsgId", "to")], ids=["api+to", "api-only"])
def test_a_flood_of_receipts_overtaking_the_run_loses_none_and_applies_none_twice(
    bs: Any,
    make_simulator: Callable[..., Simulator],
    callbacks_process: Callable[[str], tuple[str, Any]],
    db_url: str,
    tmp_path: Path,
    omit: tuple[str, ...],
) -> None:
    url, proc = callbacks_process(db_url)
    sim = make_simulator(
        callback_url=url + "clickatell/status",
        callback_omit=frozenset(omit),
        # every answer waits 3 s; its 003s go out at once: they overtake it (at 1 s a loaded
        # machine once posted all 1,000 after their IDs were recorded, and nothing overtook)
        latency_ms=3000,
        delivery_delays=(0.0, 3.0),  # the final status: about when the answer is recorded
        undeliverable_prefixes=("2782100001",),
        keep_messages=True,
    )
    numbers = [str(27821000000 + i) for i in range(N)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
    out = bs(
        "run",
        str(src),
        "--text",
        "Hi",
        "--name",
        "flood",
        "--callback",
        "3",
        sim=sim,
        env={"BATCH_SENDER_DB": db_url},
    )
    assert out.exit_code == 0, out.stderr

    deadline = time.monotonic() + 240
    while sim.callbacks_posted + sim.callbacks_failed < 2 * N and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (sim.callbacks_posted, sim.callbacks_failed) == (2 * N, 0)

    with Store.open(db_url) as store:
        deadline = time.monotonic() + 30  # what waits for the sweep (no number: 2 s)
        while inbox_size(store) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert inbox_size(store) == 0
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(recipients.c.msisdn, recipients.c.status, recipients.c.delivery_status)
            ).all()
            events = conn.execute(
                select(delivery_events.c.status, func.count()).group_by(delivery_events.c.status)
            ).all()
    assert len(rows) == N
    undeliverable = sum(n.startswith("2782100001") for n in numbers)
    assert all(r.status == "sent" for r in rows)
    finals = {r.msisdn: r.delivery_status for r in rows}
    assert all(finals[n] == ("007" if n.startswith("2782100001") else "004") for n in numbers), [
        n for n in numbers if finals[n] not in ("004", "007")
    ][:10]
    assert dict(events) == {"003": N, "004": N - undeliverable, "007": undeliverable}

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    kept = re.search(r"(\d+) kept for IDs not recorded yet", err)
    assert kept is not None, err
    assert int(kept[1]) > 0, err  # receipts did arrive before their IDs were recorded
    assert "Traceback" not in err, err
