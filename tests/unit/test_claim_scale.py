"""How many chunks a claim takes when chunks are smaller than the request size (distinct texts)."""

from __future__ import annotations

from batch_sender.send.coordinator import MAX_CLAIM_SCALE, MAX_SCALED_AHEAD, claim_scale
from batch_sender.store import Chunk, ChunkRecipient


def chunks(*sizes: int) -> list[Chunk]:
    return [
        Chunk(1, f"{n:032x}", n, "hi", False, 1, tuple(ChunkRecipient(i, "2782") for i in range(s)))
        for n, s in enumerate(sizes)
    ]


def test_full_chunks_claim_a_couriers_worth_as_before():
    assert claim_scale(chunks(100, 100, 100), 100, ahead=32, rate_limited=False) == 1


def test_one_recipient_chunks_claim_up_to_the_maximum_more():
    assert claim_scale(chunks(*[1] * 8), 100, ahead=32, rate_limited=False) == MAX_CLAIM_SCALE


def test_the_scale_follows_how_much_smaller_the_chunks_were():
    assert claim_scale(chunks(50, 50), 100, ahead=32, rate_limited=False) == 2
    # the recipients claimed ahead never exceed what full chunks would hold
    for size in (1, 2, 3, 10, 33, 60, 99, 100):
        scale = claim_scale(chunks(size, size), 100, ahead=32, rate_limited=False)
        assert scale * size <= 100 or scale == 1


def test_a_shrunk_request_size_changes_nothing():
    # after a lost answer the size is 1 and so are the chunks: no bigger claims
    assert claim_scale(chunks(1, 1, 1), 1, ahead=32, rate_limited=False) == 1


def test_a_rate_limited_campaign_claims_as_before():
    assert claim_scale(chunks(*[1] * 8), 100, ahead=32, rate_limited=True) == 1
    assert claim_scale([], 100, ahead=32, rate_limited=False) == 1


def test_at_high_concurrency_the_queue_stays_as_deep_as_it_was():
    one_each = chunks(*[1] * 8)
    assert claim_scale(one_each, 100, ahead=MAX_SCALED_AHEAD, rate_limited=False) == 1
    assert claim_scale(one_each, 100, ahead=256 * 4, rate_limited=False) == 1
    assert claim_scale(one_each, 100, ahead=MAX_SCALED_AHEAD // 2, rate_limited=False) == 2
