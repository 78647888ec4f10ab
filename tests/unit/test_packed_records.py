"""The packed forms a claim and a sending process pass around count without unpacking."""

from __future__ import annotations

from batch_sender.states import Status
from batch_sender.store.records import ChunkRecipient, Outcome, PackedRecipients, SentOutcomes


def test_packed_recipients_are_counted_in_their_text() -> None:
    for ids, numbers in (("17", "27821000017"), ("17,18,20", "27821000017,27821000018,2782")):
        packed = PackedRecipients(ids, numbers)
        assert len(packed) == len(ids.split(","))
        assert packed._items is None  # counting made no objects
        pairs = zip(ids.split(","), numbers.split(","), strict=True)
        assert list(packed) == [ChunkRecipient(int(i), n) for i, n in pairs]
        assert len(packed) == len(list(packed))


def test_sent_outcomes_are_counted_without_their_json_being_read() -> None:
    sent = SentOutcomes.of({3: "abc", 4: "def"})
    assert len(sent) == 2 and sent._items is None
    assert list(sent) == [Outcome(3, Status.SENT, "abc"), Outcome(4, Status.SENT, "def")]
