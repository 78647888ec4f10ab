"""The store writes each ``StagedRow`` field to the column of its name, on every engine.

Staging packs rows into its own column tuples (COPY on PostgreSQL, a driver executemany on
SQLite and MariaDB); this reads the rows back and compares them field by field with what went in.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from batch_sender.states import Status
from batch_sender.store import Campaign, StagedRow, Store, staging
from batch_sender.store.tables import messages, recipients

ROWS = [
    StagedRow(
        row_no=1,
        msisdn="27821234567",
        status=Status.PENDING.value,
        parts=1,
        digest="d-gsm",
        wire_text="Hi Thabo",
        fields='{"to":"27821234567","name":"Thabo"}',
    ),
    StagedRow(
        row_no=2,
        msisdn="27821234568",
        status=Status.PENDING.value,
        parts=2,
        digest="d-ucs2",
        wire_text="041F0440",
        unicode=True,
        fields='{"to":"27821234568","name":"Лера"}',
    ),
    StagedRow(
        row_no=3,
        msisdn="not a number",
        status=Status.REJECTED.value,
        error_code="NUM",
        error_description="not a phone number",
        fields='{"to":"not a number","name":"X"}',
    ),
]


def texts_by_row(store: Store, campaign_id: int) -> list[tuple[int, str | None]]:
    """Each staged row's number and its message's text (None for a row without one)."""
    r, m = recipients.c, messages.c
    with store.engine.connect() as conn:
        read = conn.execute(
            select(r.row_no, m.wire_text)
            .select_from(recipients.outerjoin(messages, r.message_id == m.id))
            .where(r.campaign_id == campaign_id)
            .order_by(r.row_no)
        ).all()
    return [(row_no, text) for row_no, text in read]


def stage_noting_statements(
    store: Store, rows: list[StagedRow], *, batch_size: int
) -> tuple[Campaign, set[str]]:
    """Stage ``rows`` as a new campaign; it and the text of every statement the driver ran."""
    statements: set[str] = set()

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.add(statement.lstrip())

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        campaign, _ = store.stage_campaign(
            name="noted", source="x.csv", fingerprint="f", options={}, rows=rows,
            batch_size=batch_size,
        )  # fmt: skip
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    return campaign, statements


def messages_created(store: Store, campaign_id: int) -> int:
    """How many messages rows the campaign has."""
    m = messages.c
    with store.engine.connect() as conn:
        return len(conn.execute(select(m.id).where(m.campaign_id == campaign_id)).all())


def test_every_field_of_a_staged_row_lands_in_the_column_of_its_name(store: Store) -> None:
    campaign, created = store.stage_campaign(
        name="fields", source="list.csv", fingerprint="f" * 64, options={}, rows=iter(ROWS)
    )
    assert created

    r, m = recipients.c, messages.c
    with store.engine.connect() as conn:
        read = conn.execute(
            select(
                r.row_no,
                r.msisdn,
                r.status,
                r.parts,
                m.digest,
                m.wire_text,
                m.unicode,
                r.error_code,
                r.error_description,
                r.fields,
            )
            .select_from(recipients.outerjoin(messages, r.message_id == m.id))
            .where(r.campaign_id == campaign.id)
            .order_by(r.row_no)
        ).all()
    back = [StagedRow(**{**row._asdict(), "unicode": bool(row.unicode or False)}) for row in read]
    assert back == ROWS
    assert list(StagedRow._fields) == list(read[0]._fields)  # the query names every field


@pytest.mark.parametrize("cache_size", [100_000, 1], ids=["cached", "evicted"])
def test_rows_get_their_own_payload_across_batches_and_cache_evictions(
    store: Store, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    """New payloads met mid-batch get their messages row before the batch is written, once
    each, also when the digest cache was cleared in between (a payload seen again after that)."""
    monkeypatch.setattr(staging, "MESSAGE_CACHE_SIZE", cache_size)
    texts = ["a", "b", "a", "c", "b", "b", "d", "a", "c"]  # batches of 2: a b | a c | b b | d a | c
    rows = [
        StagedRow(n, f"2782000{n:04d}", Status.PENDING.value, 1, f"d-{t}", f"text {t}")
        for n, t in enumerate(texts, start=1)
    ]
    rows.insert(4, StagedRow(99, "bad", Status.REJECTED.value, error_description="bad number"))

    campaign, _ = store.stage_campaign(
        name="payloads", source="x.csv", fingerprint="f", options={}, rows=rows, batch_size=2
    )

    read = texts_by_row(store, campaign.id)
    m = messages.c
    with store.engine.connect() as conn:
        payloads = conn.execute(
            select(m.digest).where(m.campaign_id == campaign.id).order_by(m.digest)
        ).all()
    assert read == [
        *((n, f"text {t}") for n, t in enumerate(texts, start=1)),
        (99, None),
    ]
    assert [digest for (digest,) in payloads] == ["d-a", "d-b", "d-c", "d-d"]


@pytest.mark.parametrize("cache_size", [100_000, 1], ids=["cached", "evicted"])
def test_messages_ids_are_looked_up_by_one_statement_whatever_the_batch_brings(
    store: Store, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    """Batches bring different numbers of new payloads; the lookup of their ids is always the
    same statement (slices of one size, the last padded), so the driver's statement cache keeps
    one prepared lookup, not one per batch size, and every row still gets its own payload."""
    monkeypatch.setattr(staging, "MESSAGE_CACHE_SIZE", cache_size)
    monkeypatch.setattr(staging, "_DIGEST_BATCH", 4)
    sizes = [1, 3, 4, 5, 8, 2]  # new payloads per batch of 10 rows (the rest rejected)
    rows: list[StagedRow] = []
    for batch, fresh in enumerate(sizes):
        for n in range(10):
            row_no = batch * 10 + n + 1
            if n < fresh:
                rows.append(StagedRow(row_no, f"2782{row_no:07d}", Status.PENDING.value, 1,
                                      f"d-{row_no}", f"text {row_no}"))  # fmt: skip
            elif n == 9 and batch:  # the previous batch's first payload again
                first = (batch - 1) * 10 + 1
                rows.append(StagedRow(row_no, f"2782{row_no:07d}", Status.PENDING.value, 1,
                                      f"d-{first}", f"text {first}"))  # fmt: skip
            else:
                rows.append(StagedRow(row_no, "bad", Status.REJECTED.value, error_code="NUM"))
    campaign, statements = stage_noting_statements(store, rows, batch_size=10)
    lookups = {s for s in statements if s.upper().startswith("SELECT") and "messages" in s}

    # SQLite has each new id back from its INSERT, and looks up only payloads met before the
    # cache was cleared (the repeats); the other engines look up every new payload's id
    assert len(lookups) == (0 if store.engine.dialect.name == "sqlite" and cache_size > 1 else 1)
    read = [(row_no, text) for row_no, text in texts_by_row(store, campaign.id) if text]
    assert read == [(row.row_no, row.wire_text) for row in rows if row.digest is not None]
    assert messages_created(store, campaign.id) == sum(sizes)


@pytest.mark.parametrize("cache_size", [100_000, 1], ids=["cached", "evicted"])
def test_new_payloads_get_their_ids_back_in_a_few_statement_texts(
    store: Store, monkeypatch: pytest.MonkeyPatch, cache_size: int
) -> None:
    """However many new payloads a batch brings, each row gets its own; on SQLite they are
    inserted (their ids returned) by pieces of a few sizes, so the driver's statement cache
    holds a handful of INSERT texts, not one per batch size."""
    monkeypatch.setattr(staging, "MESSAGE_CACHE_SIZE", cache_size)
    monkeypatch.setattr(staging, "_SQLITE_MESSAGES_BATCH", 8)
    sizes = [1, 7, 8, 9, 15, 16, 17, 3]  # new payloads per batch of 20 rows (the rest repeat)
    rows: list[StagedRow] = []
    row_no = 0
    for fresh in sizes:
        first = row_no + 1
        for n in range(20):
            row_no += 1
            text = f"text {row_no}" if n < fresh else f"text {first}"  # repeats the batch's first
            rows.append(StagedRow(row_no, f"2782{row_no:07d}", Status.PENDING.value, 1,
                                  f"d-{text}", text))  # fmt: skip
    campaign, statements = stage_noting_statements(store, rows, batch_size=20)
    inserts = {s for s in statements if s.upper().startswith("INSERT INTO MESSAGES")}

    assert texts_by_row(store, campaign.id) == [(row.row_no, row.wire_text) for row in rows]
    assert messages_created(store, campaign.id) == sum(sizes)
    if store.engine.dialect.name == "sqlite":
        assert 1 < len(inserts) <= 4  # pieces of 8, 4, 2 and 1 rows
