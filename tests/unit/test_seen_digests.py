"""The filter of digests a staging let go of: never "no" for one it holds, rarely "maybe"."""

from __future__ import annotations

import hashlib

from batch_sender.store.seen import SeenDigests


def _digests(start: int, count: int) -> list[str]:
    numbers = range(start, start + count)
    return [hashlib.blake2b(str(n).encode(), digest_size=16).hexdigest() for n in numbers]


def test_every_digest_added_is_held() -> None:
    seen = SeenDigests()
    added = _digests(0, 200_000)
    seen.update(added)
    assert all(digest in seen for digest in added)


def test_digests_never_added_are_mostly_known_to_be_new() -> None:
    seen = SeenDigests()
    seen.update(_digests(0, 1_000_000))
    others = _digests(1_000_000, 100_000)
    maybe = sum(1 for digest in others if digest in seen)
    assert maybe < 1_000  # under 1% asked of the database again (expected about 0.3%)


def test_an_empty_filter_holds_nothing() -> None:
    seen = SeenDigests()
    assert not any(digest in seen for digest in _digests(0, 10_000))
