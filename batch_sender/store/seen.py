"""Which payload digests a staging has already written, in a few megabytes: a Bloom filter.

Staging keeps the messages ids of the digests it met in a bounded cache and clears it when
full. A digest not in the cache may still have a messages row (created before a clear), so it
had to be looked up in the database: with a million distinct texts, a random probe of the
(campaign_id, digest) index for nine rows in ten. The filter holds every digest the cache let
go; one it has never held is certainly new and goes straight to the INSERT. It never says "no"
of a digest it holds; a "maybe" (about 0.3% of new digests at a million) costs the old lookup.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SeenDigests"]

_BITS = 1 << 25  # 4 MiB of filter: two bits per digest, from its 64-bit hash
_MASK = _BITS - 1


class SeenDigests:
    """A set of strings that may answer "maybe" for a string never added (never "no" for one
    that was). Strings are placed by their ``hash()``: only within one process."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray(_BITS >> 3)

    def update(self, digests: Iterable[str]) -> None:
        bits = self._bits
        for digest in digests:
            h = hash(digest)
            a, b = h & _MASK, (h >> 25) & _MASK
            bits[a >> 3] |= 1 << (a & 7)
            bits[b >> 3] |= 1 << (b & 7)

    def __contains__(self, digest: object) -> bool:
        h = hash(digest)
        a, b = h & _MASK, (h >> 25) & _MASK
        bits = self._bits
        return bool(bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7)))
