"""The rows a locking claim selects follow the recipients per message it last met."""

from __future__ import annotations

from typing import NamedTuple

from batch_sender.store import claim_limit


class _Row(NamedTuple):
    message_id: int


def test_a_first_claim_selects_size_times_count() -> None:
    assert claim_limit.limit(None, 100, 8) == 800


def test_one_recipient_per_message_selects_twice_count_rows() -> None:
    rows = [_Row(m) for m in range(1, 17)]
    met = claim_limit.per_message(rows, 100, 800)
    assert met == 1
    assert claim_limit.limit(met, 100, 8) == 16


def test_a_message_cut_off_by_the_limit_counts_as_full() -> None:
    rows = [_Row(7)] * 16
    assert claim_limit.per_message(rows, 100, 16) == 100
    assert claim_limit.limit(100, 100, 8) == 800


def test_messages_of_some_size_are_met_rounded_up_and_never_below_count() -> None:
    rows = [_Row(1)] * 3 + [_Row(2)] * 2 + [_Row(3)] * 2
    assert claim_limit.per_message(rows, 100, 800) == 3
    assert claim_limit.limit(3, 100, 8) == 48
    assert claim_limit.limit(1, 1, 8) == 8
