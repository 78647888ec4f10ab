"""The results store on real SQLite, PostgreSQL and MariaDB: staging, the queue, the views."""

from __future__ import annotations

import itertools
import pickle
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text

from batch_sender.errors import StoreError
from batch_sender.states import Status
from batch_sender.store import (
    Campaign,
    Chunk,
    ChunkRecipient,
    InFlight,
    Outcome,
    StagedRow,
    Store,
)
from batch_sender.store import queue as store_queue
from batch_sender.store.engine import SQLITE_BULK_CACHE_KIB, begin_write
from batch_sender.store.records import PackedRecipients, SentOutcomes
from batch_sender.store.tables import messages, recipients

DESIGN_RESULTS_COLUMNS = {
    "campaign",
    "row_no",
    "msisdn",
    "status",
    "api_message_id",
    "error_code",
    "error_description",
    "client_message_id",
    "parts",
    "attempts",
    "updated_at",
}


def accepted(row_no: int, msisdn: str, *, payload: str = "hello", parts: int = 1) -> StagedRow:
    """A row prepare accepted, with the payload ``payload``."""
    return StagedRow(
        row_no=row_no,
        msisdn=msisdn,
        status=Status.PENDING,
        parts=parts,
        digest=f"digest-of-{payload}",
        wire_text=payload,
    )


def rejected(row_no: int, raw: str) -> StagedRow:
    """A row prepare rejected for a bad number."""
    return StagedRow(
        row_no=row_no,
        msisdn=raw,
        status=Status.REJECTED,
        error_code="NUM",
        error_description="not a phone number",
    )


def numbers(count: int, *, payloads: int = 1, start: int = 1) -> list[StagedRow]:
    """``count`` distinct accepted numbers spread round-robin over ``payloads`` payloads."""
    return [
        accepted(row_no, f"4479{row_no:08d}", payload=f"text {row_no % payloads}")
        for row_no in range(start, start + count)
    ]


def stage(store: Store, rows: list[StagedRow], name: str = "nightly") -> Campaign:
    campaign, created = store.stage_campaign(
        name=name, source="list.csv", fingerprint="f" * 64, options={"from": "Shop"}, rows=rows
    )
    assert created
    return campaign


def claim_all(store: Store, campaign_id: int, size: int, worker: str) -> list[int]:
    ids: list[int] = []
    n = 0
    while chunk := store.claim_chunk(
        campaign_id, size=size, client_message_id=f"{worker}-{n}", worker=worker
    ):
        ids.extend(r.id for r in chunk.recipients)
        n += 1
    return ids


def status_of(store: Store, recipient_id: int) -> str:
    with store.engine.connect() as conn:
        return str(
            conn.execute(
                select(recipients.c.status).where(recipients.c.id == recipient_id)
            ).scalar()
        )


# -- staging ---------------------------------------------------------------------------------


def test_staging_writes_every_row_with_its_state(store: Store) -> None:
    rows = [*numbers(5, payloads=2), rejected(6, "not-a-number"), accepted(7, "447700900123")]

    campaign = stage(store, rows)

    assert campaign.status == "ready"
    assert campaign.total == 7
    assert campaign.options == {"from": "Shop"}
    assert campaign.created_at.tzinfo is UTC
    counts = store.counts(campaign.id)
    assert counts[Status.PENDING] == 6
    assert counts[Status.REJECTED] == 1
    assert sum(counts.values()) == 7
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == 3


def test_later_rows_repeating_an_accepted_number_become_duplicates(store: Store) -> None:
    rows = [
        rejected(1, "447700900001"),  # a rejected row does not make later ones duplicates
        accepted(2, "447700900001"),
        accepted(3, "447700900002"),
        accepted(4, "447700900001", payload="other text"),
        accepted(5, "447700900002"),
        accepted(6, "447700900003"),
    ]

    campaign = stage(store, rows)

    by_row = {r["row_no"]: r["status"] for r in store.results(campaign.id)}
    assert by_row == {
        1: "rejected",
        2: "pending",
        3: "pending",
        4: "duplicate",
        5: "duplicate",
        6: "pending",
    }


def test_a_row_iterator_failing_mid_stream_stages_nothing(store: Store) -> None:
    def rows() -> Iterator[StagedRow]:
        yield from numbers(25, payloads=3)
        raise RuntimeError("source file vanished")

    with pytest.raises(RuntimeError, match="vanished"):
        store.stage_campaign(
            name="broken", source="x.csv", fingerprint="f", options={}, rows=rows(), batch_size=10
        )

    assert store.campaign("broken") is None
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(recipients)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == 0


def test_staging_an_existing_name_returns_the_existing_campaign(store: Store) -> None:
    first = stage(store, numbers(3))

    again, created = store.stage_campaign(
        name="nightly", source="other.csv", fingerprint="g", options={}, rows=numbers(10)
    )

    assert not created
    assert again == first
    assert sum(store.counts(first.id).values()) == 3


def test_two_stores_staging_one_name_at_once_stage_it_once(db_url: str) -> None:
    stores = [Store.open(db_url) for _ in range(2)]
    outcomes: list[tuple[Campaign, bool]] = []
    barrier = threading.Barrier(2)

    def run(store: Store) -> None:
        barrier.wait()
        outcomes.append(
            store.stage_campaign(
                name="race", source="s", fingerprint="f", options={}, rows=numbers(3000)
            )
        )

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(created for _, created in outcomes) == [False, True]
        assert outcomes[0][0].id == outcomes[1][0].id
        assert sum(stores[0].counts(outcomes[0][0].id).values()) == 3000
    finally:
        for s in stores:
            s.close()


def test_long_values_are_cut_to_their_columns_and_long_payloads_kept(store: Store) -> None:
    ucs2_hex = "0041" * 8000  # 32,000 characters: beyond MariaDB's TEXT
    rows = [
        StagedRow(
            1, "x" * 300, Status.REJECTED, error_code="TOOLONGCODE", error_description="d" * 999
        ),
        StagedRow(2, "447700900001", Status.PENDING, 5, "u", ucs2_hex, unicode=True),
    ]
    campaign = stage(store, rows)

    first = next(store.results(campaign.id))
    chunk = store.claim_chunk(campaign.id, size=10, client_message_id="c1", worker="w")

    assert (len(first["msisdn"]), first["error_code"]) == (64, "TOOLONGC")
    assert len(first["error_description"]) == 255
    assert chunk is not None
    assert (chunk.wire_text, chunk.unicode, chunk.parts) == (ucs2_hex, True, 5)


# -- the queue -------------------------------------------------------------------------------


def test_claim_groups_by_message_and_never_returns_a_row_twice(store: Store) -> None:
    campaign = stage(store, numbers(250, payloads=2))

    chunks: list[Chunk] = []
    while chunk := store.claim_chunk(
        campaign.id, size=100, client_message_id=f"c{len(chunks)}", worker="w1"
    ):
        chunks.append(chunk)

    ids = [r.id for c in chunks for r in c.recipients]
    assert len(ids) == len(set(ids)) == 250
    assert [len(c.recipients) for c in chunks] == [100, 25, 100, 25]
    for c in chunks:  # one payload per chunk, lowest ids first
        assert {r.msisdn[-1] for r in c.recipients} <= set("13579") or {
            r.msisdn[-1] for r in c.recipients
        } <= set("02468")
        assert [r.id for r in c.recipients] == sorted(r.id for r in c.recipients)
    assert store.counts(campaign.id)[Status.SENDING] == 250
    assert store.claim_chunk(campaign.id, size=100, client_message_id="z", worker="w1") is None


def test_claims_of_distinct_texts_keep_few_messages_and_each_chunk_its_own(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's messages cache stays small (distinct texts reuse none of its entries), and
    a message pushed out of it is read again: every chunk still carries its own text."""
    monkeypatch.setattr(store_queue, "CLAIM_MESSAGE_CACHE_SIZE", 4)
    campaign = stage(store, numbers(30, payloads=30))
    ids = (f"c{n}" for n in itertools.count())
    chunks: list[Chunk] = []
    while claimed := store.claim_chunks(
        campaign.id, size=5, count=3, worker="w1", new_id=lambda: next(ids)
    ):
        chunks.extend(claimed)
        assert len(store._messages) <= 4
    assert len(chunks) == 30
    for chunk in chunks:
        (recipient,) = chunk.recipients
        row_no = int(recipient.msisdn[-8:])
        assert chunk.wire_text == f"text {row_no % 30}"
    # the same text again (a release) is read again once it has been pushed out
    store.release([chunks[0].recipients[0].id])
    (again,) = store.claim_chunks(campaign.id, size=5, count=3, worker="w1", new_id=lambda: "z")
    assert (again.message_id, again.wire_text) == (chunks[0].message_id, chunks[0].wire_text)


def test_claim_stamps_the_claim_on_each_row(store: Store) -> None:
    campaign = stage(store, numbers(3))

    chunk = store.claim_chunk(campaign.id, size=2, client_message_id="cm-1", worker="host:42")

    assert chunk is not None
    rows = {r["row_no"]: r for r in store.results(campaign.id)}
    assert [rows[n]["status"] for n in (1, 2, 3)] == ["sending", "sending", "pending"]
    assert (rows[1]["client_message_id"], rows[1]["attempts"]) == ("cm-1", 1)
    with store.engine.connect() as conn:
        claimed_by = conn.execute(
            select(recipients.c.claimed_by).where(recipients.c.id == chunk.recipients[0].id)
        ).scalar()
    assert claimed_by == "host:42"


def test_concurrent_claimers_never_get_the_same_row(db_url: str) -> None:
    with Store.open(db_url) as setup:
        campaign = stage(setup, numbers(1200, payloads=3))
    workers = 4
    stores = [Store.open(db_url) for _ in range(workers)]
    claimed: list[list[int]] = [[] for _ in range(workers)]
    barrier = threading.Barrier(workers)

    def work(n: int) -> None:
        barrier.wait()  # everyone claims a first chunk at the same moment...
        first = stores[n].claim_chunk(campaign.id, size=25, client_message_id=f"w{n}", worker="w")
        assert first is not None
        barrier.wait()  # ...then all drain the queue together
        claimed[n] = [r.id for r in first.recipients]
        claimed[n] += claim_all(stores[n], campaign.id, 25, f"w{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        every = [i for ids in claimed for i in ids]
        assert len(every) == len(set(every)) == 1200
    finally:
        for s in stores:
            s.close()


def test_record_writes_outcomes_only_to_claimed_rows(store: Store) -> None:
    campaign = stage(store, numbers(3))
    chunk = store.claim_chunk(campaign.id, size=2, client_message_id="c1", worker="w")
    assert chunk is not None
    sent, failed = chunk.recipients
    never_claimed = sent.id + 2

    store.record(
        [
            Outcome(sent.id, Status.SENT, api_message_id="a" * 32),
            Outcome(failed.id, Status.FAILED, error_code="114", error_description="Cannot route"),
            Outcome(never_claimed, Status.SENT, api_message_id="b" * 32),
        ]
    )

    rows = {r["row_no"]: r for r in store.results(campaign.id)}
    assert (rows[1]["status"], rows[1]["api_message_id"]) == ("sent", "a" * 32)
    assert (rows[2]["status"], rows[2]["error_code"]) == ("failed", "114")
    assert rows[2]["error_description"] == "Cannot route"
    assert (rows[3]["status"], rows[3]["api_message_id"]) == ("pending", None)


def test_record_writes_chunks_accepted_whole_from_their_packed_text(store: Store) -> None:
    campaign = stage(store, numbers(4))
    chunk = store.claim_chunk(campaign.id, size=4, client_message_id="c1", worker="w")
    assert chunk is not None
    a, b, c, d = (r.id for r in chunk.recipients)
    packed = SentOutcomes.of({a: "a" * 40, b: "b" * 32}, api_id_length=32)

    store.record(
        [Outcome(c, Status.FAILED, error_code="114"), Outcome(d, Status.SENT, "d" * 32)],
        accepted=[packed, SentOutcomes.of({}, api_id_length=32)],
    )

    rows = {r["row_no"]: r for r in store.results(campaign.id)}  # ids in row order
    assert [(rows[n]["status"], rows[n]["api_message_id"]) for n in (1, 2, 3, 4)] == [
        ("sent", "a" * 32),  # cut to the column's width
        ("sent", "b" * 32),
        ("failed", None),
        ("sent", "d" * 32),
    ]


def test_record_settles_unknown_rows_but_not_final_ones(store: Store) -> None:
    campaign = stage(store, numbers(2))
    chunk = store.claim_chunk(campaign.id, size=2, client_message_id="c1", worker="w")
    assert chunk is not None
    first, second = (r.id for r in chunk.recipients)
    lost = Outcome(first, Status.UNKNOWN, error_description="read timed out")
    store.record([lost, Outcome(second, Status.SENT, "a1")])

    store.record([Outcome(first, Status.SENT, "a2"), Outcome(second, Status.FAILED, "301")])

    assert (status_of(store, first), status_of(store, second)) == ("sent", "sent")
    rows = {r["row_no"]: r for r in store.results(campaign.id)}  # ids in row order
    assert (rows[1]["api_message_id"], rows[1]["error_description"]) == ("a2", None)
    assert (rows[2]["api_message_id"], rows[2]["error_code"]) == ("a1", None)


def test_release_gives_claimed_rows_back_to_the_queue(store: Store) -> None:
    campaign = stage(store, numbers(4))
    chunk = store.claim_chunk(campaign.id, size=4, client_message_id="c1", worker="w")
    assert chunk is not None

    store.release([r.id for r in chunk.recipients])

    rows = list(store.results(campaign.id))
    assert {r["status"] for r in rows} == {"pending"}
    assert {r["attempts"] for r in rows} == {0}
    assert {r["client_message_id"] for r in rows} == {None}
    again = store.claim_chunk(campaign.id, size=4, client_message_id="c2", worker="w")
    assert again is not None
    assert [r.id for r in again.recipients] == [r.id for r in chunk.recipients]


def test_in_flight_groups_sending_rows_by_client_message_id(store: Store) -> None:
    campaign = stage(store, numbers(5))
    a = store.claim_chunk(campaign.id, size=2, client_message_id="cm-a", worker="w")
    b = store.claim_chunk(campaign.id, size=2, client_message_id="cm-b", worker="w")
    assert a is not None and b is not None
    store.record([Outcome(b.recipients[0].id, Status.UNKNOWN)])

    sending = store.in_flight(campaign.id)
    both = store.in_flight(campaign.id, statuses=(Status.SENDING, Status.UNKNOWN))
    old = store.in_flight(campaign.id, older_than=datetime.now(UTC) - timedelta(hours=1))
    recent = store.in_flight(campaign.id, older_than=datetime.now(UTC) + timedelta(hours=1))

    def shape(groups: list[InFlight]) -> list[tuple[str, Status, list[ChunkRecipient]]]:
        return [(g.client_message_id, g.status, list(g.recipients)) for g in groups]

    assert shape(sending) == [
        ("cm-a", Status.SENDING, list(a.recipients)),
        ("cm-b", Status.SENDING, [b.recipients[1]]),
    ]
    assert shape(both) == [
        ("cm-a", Status.SENDING, list(a.recipients)),
        ("cm-b", Status.SENDING, [b.recipients[1]]),
        ("cm-b", Status.UNKNOWN, [b.recipients[0]]),
    ]
    assert {g.claimed_by for g in both} == {"w"}
    assert all(g.claimed_at is not None for g in both)
    assert old == []
    assert recent == sending


def test_release_from_unknown_requeues_rows_the_gateway_never_saw(store: Store) -> None:
    campaign = stage(store, numbers(2))
    chunk = store.claim_chunk(campaign.id, size=2, client_message_id="c1", worker="w")
    assert chunk is not None
    store.record([Outcome(r.id, Status.UNKNOWN) for r in chunk.recipients])
    ids = [r.id for r in chunk.recipients]

    store.release(ids)  # only sending rows by default: unknown ones stay
    assert store.counts(campaign.id)[Status.UNKNOWN] == 2
    store.release(ids, from_statuses=(Status.UNKNOWN,))
    assert store.counts(campaign.id)[Status.PENDING] == 2


def test_requeue_unknown_makes_unknown_rows_pending_again(store: Store) -> None:
    campaign = stage(store, numbers(3))
    chunk = store.claim_chunk(campaign.id, size=3, client_message_id="c1", worker="w")
    assert chunk is not None
    store.record([Outcome(r.id, Status.UNKNOWN) for r in chunk.recipients[:2]])

    moved = store.requeue_unknown(campaign.id)

    assert moved == 2
    counts = store.counts(campaign.id)
    assert (counts[Status.PENDING], counts[Status.SENDING], counts[Status.UNKNOWN]) == (2, 1, 0)
    again = store.claim_chunk(campaign.id, size=3, client_message_id="c2", worker="w")
    assert again is not None
    assert [r.id for r in again.recipients] == [r.id for r in chunk.recipients[:2]]


# -- campaigns and views ---------------------------------------------------------------------


def test_set_status_stamps_start_and_finish(store: Store) -> None:
    campaign = stage(store, numbers(1))

    store.set_status(campaign.id, "running")
    running = store.campaign("nightly")
    store.set_status(campaign.id, "finished")
    finished = store.campaign("nightly")

    assert running is not None and finished is not None
    assert running.started_at is not None and running.finished_at is None
    assert finished.status == "finished"
    assert finished.started_at == running.started_at
    assert finished.finished_at is not None and finished.finished_at >= running.started_at
    with pytest.raises(ValueError):
        store.set_status(campaign.id, "paused")


def test_campaigns_lists_every_campaign_oldest_first(store: Store) -> None:
    stage(store, numbers(1), name="monday")
    stage(store, numbers(1), name="tuesday")

    assert [c.name for c in store.campaigns()] == ["monday", "tuesday"]


def test_results_view_has_every_design_column(store: Store) -> None:
    campaign = stage(store, [*numbers(2), rejected(3, "??")])

    rows = list(store.results(campaign.id))
    with store.engine.connect() as conn:
        view_columns = set(conn.execute(text("SELECT * FROM results")).keys())

    assert view_columns >= DESIGN_RESULTS_COLUMNS | {"campaign_id"}  # DESIGN.md §5: "at least"
    assert [r["row_no"] for r in rows] == [1, 2, 3]
    assert rows[0]["campaign"] == "nightly"
    assert rows[2]["msisdn"] == "??"
    assert rows[2]["error_description"] == "not a phone number"
    assert isinstance(rows[0]["updated_at"], datetime)


def test_summary_view_counts_recipients_and_parts_per_status(store: Store) -> None:
    rows = [
        accepted(1, "447700900001", parts=2),
        accepted(2, "447700900002", parts=2),
        accepted(3, "447700900001", parts=2),
        rejected(4, "bad"),
    ]
    campaign = stage(store, rows)
    store.claim_chunk(campaign.id, size=1, client_message_id="c", worker="w")

    with store.engine.connect() as conn:
        summary = {
            row.status: (row.recipients, row.parts)
            for row in conn.execute(
                text("SELECT campaign, status, recipients, parts FROM campaign_summary")
            )
        }

    assert summary == {
        "sending": (1, 2),
        "pending": (1, 2),
        "duplicate": (1, 2),
        "rejected": (1, 0),
    }
    census = store.census(campaign.id)
    assert census.parts == 4  # pending and sending: duplicates and rejections cost nothing
    assert census.counts == {
        **dict.fromkeys(Status, 0),
        **{Status(s): n for s, (n, _) in summary.items()},
    }
    assert census.counts == store.counts(campaign.id)


def test_error_counts_tally_failures_and_rejections_most_common_first(store: Store) -> None:
    campaign = stage(store, [*numbers(3), rejected(4, "x"), rejected(5, "y")])
    chunk = store.claim_chunk(campaign.id, size=3, client_message_id="c", worker="w")
    assert chunk is not None
    store.record([Outcome(chunk.recipients[0].id, Status.FAILED, None, "114", "Cannot route")])

    assert store.error_counts(campaign.id) == [
        (Status.REJECTED, "NUM", "not a phone number", 2),
        (Status.FAILED, "114", "Cannot route", 1),
    ]


# -- opening ---------------------------------------------------------------------------------


def test_opening_an_old_schema_without_upgrade_asks_for_db_upgrade(db_url: str) -> None:
    with pytest.raises(StoreError, match="batch-sender db upgrade"):
        Store.open(db_url, upgrade=False)

    with Store.open(db_url) as upgraded:
        upgraded.close()
    with Store.open(db_url, upgrade=False) as opened:
        assert opened.campaigns() == []


def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    url = "postgresql+psycopg://batch:s3cr3t-pw@127.0.0.1:9/results?connect_timeout=2"

    with pytest.raises(StoreError) as caught:
        Store.open(url)

    assert "s3cr3t-pw" not in str(caught.value)
    assert "***" in str(caught.value)


# -- sharing a campaign between workers ---------------------------------------------------------


def claimed_at(store: Store, recipient_id: int) -> datetime:
    with store.engine.connect() as conn:
        value = conn.execute(
            select(recipients.c.claimed_at).where(recipients.c.id == recipient_id)
        ).scalar()
    assert isinstance(value, datetime)
    return value


def test_touch_claims_renews_the_lease_of_this_workers_sending_rows_only(store: Store) -> None:
    campaign = stage(store, numbers(3))
    mine = store.claim_chunk(campaign.id, size=1, client_message_id="a", worker="host:1:aa")
    theirs = store.claim_chunk(campaign.id, size=1, client_message_id="b", worker="host:2:bb")
    done = store.claim_chunk(campaign.id, size=1, client_message_id="c", worker="host:1:aa")
    assert mine and theirs and done
    store.record([Outcome(done.recipients[0].id, Status.SENT, api_message_id="x")])
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    with store.engine.begin() as conn:
        conn.execute(recipients.update().values(claimed_at=long_ago))

    touched = store.touch_claims(campaign.id, "host:1:aa")

    assert touched == 1
    assert claimed_at(store, mine.recipients[0].id) > datetime.now(UTC) - timedelta(minutes=5)
    assert claimed_at(store, theirs.recipients[0].id) == long_ago
    assert claimed_at(store, done.recipients[0].id) == long_ago


def test_rate_reservations_follow_each_other_on_one_schedule(store: Store) -> None:
    def start(account: str, units: int) -> float:
        """When the booked block starts, on the local clock."""
        delay = store.reserve_rate(account, units, rate=100.0)
        return time.monotonic() + delay

    first = start("123:user@gw", 100)  # one second's worth
    second = start("123:user@gw", 50)
    third = start("123:user@gw", 50)
    other_account = start("999:user@gw", 100)

    # (tolerances: the time a reservation takes, on a loaded machine)
    assert second - first == pytest.approx(1.0, abs=0.2)
    assert third - second == pytest.approx(0.5, abs=0.2)
    assert other_account - time.monotonic() < 0.2  # its own schedule starts now


def test_concurrent_rate_reservations_never_overlap(db_url: str) -> None:
    workers, each, units, rate = 4, 25, 10, 10.0  # 1000 units at 10/s: 100 s of schedule
    stores = [Store.open(db_url) for _ in range(workers)]
    starts: list[list[float]] = [[] for _ in range(workers)]  # local clock
    barrier = threading.Barrier(workers)

    def work(n: int) -> None:
        barrier.wait()
        for _ in range(each):
            delay = stores[n].reserve_rate("acct", units, rate=rate)
            starts[n].append(time.monotonic() + delay)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    # Every 1 s block starts where an earlier one ended, so 100 blocks span 100 s; a lost
    # update would put two blocks on one slot and leave the schedule shorter.
    ordered = sorted(t for ts in starts for t in ts)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert len(ordered) == workers * each
    assert min(gaps) > 0.8 and max(gaps) < 1.2, gaps


def test_exclusive_lock_is_held_by_one_store_at_a_time(db_url: str) -> None:
    with Store.open(db_url) as one, Store.open(db_url) as two:
        if not one.shared:
            pytest.skip("SQLite is one machine's store: exclusive() always yields True there")
        with (
            one.exclusive("settle.1") as first,
            two.exclusive("settle.1") as second,
            two.exclusive("settle.2") as other,
        ):
            assert (first, second, other) == (True, False, True)
        with two.exclusive("settle.1") as after_release:
            assert after_release


def test_a_lost_deadlock_is_recognised_as_safe_to_claim_again() -> None:
    import psycopg.errors
    import pymysql.err
    from sqlalchemy.exc import OperationalError

    from batch_sender.store.base import _deadlocked

    def wrapped(orig: BaseException) -> OperationalError:
        return OperationalError("UPDATE recipients ...", {}, orig)

    assert _deadlocked(wrapped(pymysql.err.OperationalError(1213, "Deadlock found")))
    assert _deadlocked(wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout")))
    assert _deadlocked(wrapped(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert not _deadlocked(wrapped(pymysql.err.OperationalError(2003, "Can't connect")))
    assert not _deadlocked(wrapped(psycopg.errors.UndefinedTable("no such table")))
    assert not _deadlocked(ValueError("not a database error"))
    assert not _deadlocked(None)


def test_staging_skips_foreign_key_checks_only_for_its_own_transaction(tmp_path: Path) -> None:
    """Staging turns SQLite's per-row foreign key lookups off, and its page cache up, for its
    transaction only: the connection goes back to the pool as it was."""
    with Store.open(f"sqlite:///{tmp_path / 'fk.db'}") as store:
        with store.engine.connect() as conn:
            cache_size = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        with begin_write(store.engine, bulk=True) as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_BULK_CACHE_KIB
        assert cache_size != -SQLITE_BULK_CACHE_KIB
        campaign = stage(store, numbers(5, payloads=2))
        assert sum(store.counts(campaign.id).values()) == 5
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == cache_size
            # accepted rows' error columns, bound as '' for speed, are stored as NULL
            blank = (
                "SELECT count(*) FROM recipients WHERE error_code = '' OR error_description = ''"
            )
            assert conn.exec_driver_sql(blank).scalar() == 0
            nulls = "SELECT count(*) FROM recipients WHERE error_code IS NULL"
            assert conn.exec_driver_sql(nulls).scalar() == 5
            with pytest.raises(Exception, match="FOREIGN KEY"):
                conn.exec_driver_sql(
                    "INSERT INTO messages (campaign_id, digest, wire_text, unicode, parts) "
                    "VALUES (999, 'd', 't', 0, 1)"
                )


def test_sqlite_claims_hand_out_chunks_packed_by_the_query(tmp_path: Path) -> None:
    """On SQLite a chunk's recipients come packed as the claim query's texts: one message per
    chunk, ids in order, and pickled as those texts alone (what a sending process receives)."""
    with Store.open(f"sqlite:///{tmp_path / 'packed.db'}") as store:
        campaign = stage(store, numbers(7, payloads=2))
        ids = iter(["c1", "c2", "c3"])
        chunks = store.claim_chunks(
            campaign.id, size=3, count=3, worker="w", new_id=lambda: next(ids)
        )
        assert all(isinstance(c.recipients, PackedRecipients) for c in chunks)
        assert [len(c.recipients) for c in chunks] == [3, 1, 3]
        assert chunks[0].message_id == chunks[1].message_id != chunks[2].message_id
        first = chunks[0].recipients
        assert [r.id for r in first] == sorted(r.id for r in first)
        copy = pickle.loads(pickle.dumps(chunks[0]))
        assert copy == chunks[0] and copy.recipients == tuple(first)
        wire = pickle.dumps(first)  # already unpacked above: still only the texts go
        assert isinstance(first, PackedRecipients)
        assert first.ids.encode() in wire and first.numbers.encode() in wire
        assert b"ChunkRecipient" not in wire
        assert first.ids == ",".join(str(r.id) for r in first)
        rows = {r["row_no"]: r for r in store.results(campaign.id)}
        claimed = {r.id for c in chunks for r in c.recipients}
        assert {r["client_message_id"] for r in rows.values() if r["status"] == "sending"} == {
            "c1",
            "c2",
            "c3",
        }
        assert sum(r["status"] == "sending" for r in rows.values()) == len(claimed) == 7


def test_sqlite_without_json_update_claims_and_records_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite older than 3.38 (no ``->>``) takes the executemany path: same results."""
    monkeypatch.setattr(store_queue, "_SQLITE_JSON_UPDATE", (99, 0, 0))
    monkeypatch.setattr(store_queue._ClaimSql, "_cache", {})
    with Store.open(f"sqlite:///{tmp_path / 'old.db'}") as old:
        campaign = stage(old, numbers(5, payloads=2))
        first = old.claim_chunk(campaign.id, size=10, client_message_id="c1", worker="w")
        assert first is not None
        a, b, c = (r.id for r in first.recipients)

        old.record([Outcome(a, Status.SENT, "a" * 32), Outcome(b, Status.FAILED, "114", "x")])

        rows = {r["row_no"]: r for r in old.results(campaign.id)}
        assert [rows[n]["status"] for n in range(1, 6)] == [
            "sent",
            "pending",
            "failed",
            "pending",
            "sending",
        ]
        assert (rows[1]["api_message_id"], rows[5]["client_message_id"]) == ("a" * 32, "c1")
    assert store_queue._ClaimSql._cache["sqlite+pysqlite"].claim_packed is None


def test_sqlite_claims_by_text_statement_and_by_core_query_hand_out_the_same_chunks(
    tmp_path: Path,
) -> None:
    """A plain SQLite claim runs its SELECT as a prepared text; a claim with a condition (send
    windows) builds it with Core. Both must hand out the same chunks, in the same order."""
    handed: list[list[tuple[int, list[tuple[int, str]]]]] = []
    for name, condition in (("text", None), ("core", recipients.c.id > 0)):
        with Store.open(f"sqlite:///{tmp_path / name}.db") as store:
            if condition is not None:
                store.before_claim = lambda _campaign_id, c=condition: c
            campaign = stage(store, numbers(23, payloads=3))
            ids = (f"{name}-{n}" for n in itertools.count())
            chunks = store.claim_chunks(
                campaign.id, size=4, count=5, worker="w", new_id=lambda ids=ids: next(ids)
            )
            handed.append([(c.message_id, [tuple(r) for r in c.recipients]) for c in chunks])
    assert handed[0] == handed[1]
    assert [len(members) for _, members in handed[0]] == [4, 4, 4, 4, 4]


def test_claims_of_distinct_texts_select_about_what_they_claim(store: Store) -> None:
    """A claim reads every row it selects (PostgreSQL and MariaDB lock them too). With one
    recipient per message a limit of size x count selected a hundred rows for each one claimed;
    after the first claim the limit follows the recipients per message it met. A campaign of one
    large message still gets full chunks, and a mix gets every row once."""
    limits: list[int] = []

    def spy(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if "FOR UPDATE" in statement:  # the claim's SELECT: its LIMIT is its last parameter
            assert isinstance(params, dict)
            limits.append(int(list(params.values())[-1]))
        elif statement.startswith("SELECT message_id, group_concat"):  # SQLite's packed claim
            assert isinstance(params, tuple)
            limits.append(params[1])  # (campaign_id, rows, messages)

    event.listen(store._engine, "before_cursor_execute", spy)
    try:
        ids = (f"c{n}" for n in itertools.count())
        distinct = stage(store, numbers(60, payloads=60), name="distinct")
        chunks: list[Chunk] = []
        while claimed := store.claim_chunks(
            distinct.id, size=100, count=4, worker="w", new_id=lambda: next(ids)
        ):
            chunks.extend(claimed)
        assert [len(c.recipients) for c in chunks] == [1] * 60
        assert limits[0] == 400 and max(limits[1:]) <= 8, limits

        big = stage(store, numbers(250), name="big")
        sizes: list[int] = []
        while claimed := store.claim_chunks(
            big.id, size=100, count=2, worker="w", new_id=lambda: next(ids)
        ):
            sizes.extend(len(c.recipients) for c in claimed)
        assert sizes == [100, 100, 50]

        # one recipient each for "text 1".."text 39", then 121 sharing "text 0"
        mixed = stage(store, numbers(40, payloads=40) + numbers(120, start=41), name="mixed")
        taken: list[int] = []
        while claimed := store.claim_chunks(
            mixed.id, size=50, count=3, worker="w", new_id=lambda: next(ids)
        ):
            assert all(len(c.recipients) <= 50 for c in claimed)
            taken.extend(r.id for c in claimed for r in c.recipients)
        assert len(taken) == len(set(taken)) == 160
        assert store.counts(mixed.id)[Status.PENDING] == 0
    finally:
        event.remove(store._engine, "before_cursor_execute", spy)
