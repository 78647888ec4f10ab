"""Prepare hands the store ``StagedRow``'s fields as plain tuples, each field where its name says.

The hot loop builds accepted rows from a tuple of the payload's shared fields (no per-field
check); these tests read its rows through ``StagedRow`` and compare them with rows built field
by field by name, so a field added, dropped or moved in ``StagedRow`` that the splice does not
follow fails here.
"""

from __future__ import annotations

import json

from batch_sender import prepare, sms
from batch_sender.config import RunSettings
from batch_sender.states import Status
from batch_sender.store.records import STAGED_STATUS, StagedRow

COLUMNS = ("to", "name", "country")


def staged(settings: RunSettings, *rows: list[str]) -> list[StagedRow]:
    preparer = prepare.Preparer(settings, COLUMNS)
    records = [(n, n + 1, values[0], values) for n, values in enumerate(rows, start=1)]
    out = list(preparer.staged(records))
    assert all(type(row) is tuple and len(row) == len(StagedRow._fields) for row in out)
    return [StagedRow(*row) for row in out]


def test_an_accepted_row_holds_its_number_payload_and_source_row_by_name():
    values = ["27821234567", "Thabo", "ZA"]
    [row] = staged(RunSettings(name="t", text="Hi {name}"), values)

    encoded = sms.encode("Hi Thabo")
    assert row == StagedRow(
        row_no=1,
        msisdn="27821234567",
        status=Status.PENDING.value,
        parts=encoded.parts,
        digest=prepare.digest(encoded.wire_text, encoded.unicode),
        wire_text=encoded.wire_text,
        unicode=False,
        fields=json.dumps(dict(zip(COLUMNS, values, strict=True)), separators=(",", ":")),
    )


def test_rows_sharing_a_text_share_its_payload_fields_and_keep_their_own():
    first, second = staged(
        RunSettings(name="t", text="Same for all"),
        ["27821234567", "Thabo", "ZA"],
        ["27821234568", "Lerato", "ZA"],
    )

    assert (first.row_no, first.msisdn) == (1, "27821234567")
    assert (second.row_no, second.msisdn) == (2, "27821234568")
    assert json.loads(second.fields or "")["name"] == "Lerato"
    own = {"row_no", "msisdn", "fields"}
    shared = [name for name in StagedRow._fields if name not in own]
    assert [getattr(first, f) for f in shared] == [getattr(second, f) for f in shared]


def test_a_unicode_text_is_marked_unicode():
    [row] = staged(RunSettings(name="t", text="Привет {name}"), ["27821234567", "Thabo", "ZA"])

    assert row.unicode is True
    assert row.wire_text == sms.encode("Привет Thabo").wire_text


def test_a_bad_number_is_rejected_with_its_raw_value_and_a_reason():
    [row] = staged(RunSettings(name="t", text="Hi"), ["not a number", "Thabo", "ZA"])

    assert row.status == Status.REJECTED
    assert row.error_description
    assert row == StagedRow(
        row_no=1,
        msisdn="not a number",
        status=Status.REJECTED.value,
        error_description=row.error_description,
        fields='{"to":"not a number","name":"Thabo","country":"ZA"}',
    )


def test_an_unsendable_text_is_rejected_with_the_normalised_number():
    [row] = staged(RunSettings(name="t", text="{name}"), ["27821234567", "", "ZA"])

    assert (row.msisdn, row.status, row.error_description) == (
        "27821234567",
        Status.REJECTED,
        "empty message text",
    )
    assert (row.parts, row.digest, row.wire_text, row.error_code) == (0, None, None, None)


def test_the_country_column_reads_each_rows_own_country():
    [row] = staged(
        RunSettings(name="t", text="Hi", country_column="country"), ["0821234567", "Thabo", "ZA"]
    )

    assert (row.msisdn, row.status) == ("27821234567", Status.PENDING)


def test_the_status_position_is_the_status_field():
    [accepted, rejected] = staged(
        RunSettings(name="t", text="Hi"), ["27821234567", "A", "ZA"], ["bad", "B", "ZA"]
    )

    assert StagedRow._fields[STAGED_STATUS] == "status"
    assert (accepted[STAGED_STATUS], rejected[STAGED_STATUS]) == ("pending", "rejected")
