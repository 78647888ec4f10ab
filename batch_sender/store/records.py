"""The plain values the store takes and returns, so callers never handle SQL rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, overload

from batch_sender.states import Status

__all__ = [
    "Campaign",
    "Census",
    "Chunk",
    "ChunkRecipient",
    "InFlight",
    "Outcome",
    "PackedRecipients",
    "SentOutcomes",
    "StagedRow",
    "StagedTuple",
    "staged_tuple",
]


@dataclass(frozen=True, slots=True)
class Campaign:
    """One campaign row: what was staged, from what, and where it stands."""

    id: int
    name: str
    source: str  # file path or a description of the SQL query
    fingerprint: str  # identity of source + text + options, computed by the caller
    options: dict[str, object]
    status: str  # one of tables.CAMPAIGN_STATUSES
    total: int  # rows staged, whatever their state
    created_at: datetime  # all times are timezone-aware UTC
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Census:
    """A campaign's rows per state (every state, zeros included) and the message parts of the
    rows accepted for sending: the end-of-run summary, counted in one pass."""

    counts: dict[Status, int]
    parts: int


@dataclass(frozen=True, slots=True)
class StagedRow:
    """One source row after prepare: its number, state, and payload (None when rejected)."""

    row_no: int
    msisdn: str
    status: Status
    parts: int = 0
    digest: str | None = None  # identity of the payload; equal digests share one messages row
    wire_text: str | None = None
    unicode: bool = False
    error_code: str | None = None  # why it was rejected, if it was
    error_description: str | None = None


#: A :class:`StagedRow` as a plain tuple: its fields in order, the status as its string value.
#: The staging hot path passes these, so a million rows cost no million objects.
StagedTuple = tuple[int, str, str, int, str | None, str | None, bool, str | None, str | None]


def staged_tuple(row: StagedRow) -> StagedTuple:
    """``row`` as a :data:`StagedTuple`."""
    return (
        row.row_no,
        row.msisdn,
        row.status.value,
        row.parts,
        row.digest,
        row.wire_text,
        row.unicode,
        row.error_code,
        row.error_description,
    )


class ChunkRecipient(NamedTuple):
    """A claimed recipient: its row id (to record the outcome against) and number.

    A named tuple, like :class:`Outcome`: the send path makes one per recipient, and a tuple is
    several times cheaper to build (and to pickle) than a frozen dataclass.
    """

    id: int
    msisdn: str


class PackedRecipients(Sequence[ChunkRecipient]):
    """A chunk's recipients as the claim query returned them: their ids and their numbers, each
    as one comma-separated text (``"17,18,20"``, ``"27821001234,27821001235,27821001237"``).

    The coordinator claims, hands over and pickles a chunk without making an object of each
    recipient; they are made on first use, by whoever sends the chunk (in a sending process, on
    the other core). It pickles as the two texts. (A claimed number is a pending row's: digits
    only, never a comma.)
    """

    __slots__ = ("_items", "ids", "numbers")

    def __init__(self, ids: str, numbers: str) -> None:
        self.ids = ids
        self.numbers = numbers
        self._items: tuple[ChunkRecipient, ...] | None = None

    def _unpacked(self) -> tuple[ChunkRecipient, ...]:
        items = self._items
        if items is None:
            ids = self.ids.split(",")
            numbers = self.numbers.split(",")
            if len(ids) != len(numbers):
                raise ValueError(f"{len(ids)} recipient ids but {len(numbers)} numbers")
            items = self._items = tuple(map(ChunkRecipient, map(int, ids), numbers))
        return items

    @overload
    def __getitem__(self, index: int) -> ChunkRecipient: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ChunkRecipient]: ...
    def __getitem__(self, index: int | slice) -> ChunkRecipient | Sequence[ChunkRecipient]:
        return self._unpacked()[index]

    def __len__(self) -> int:
        return len(self._unpacked())

    def __iter__(self) -> Iterator[ChunkRecipient]:
        return iter(self._unpacked())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._unpacked() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._unpacked())

    def __repr__(self) -> str:
        return f"PackedRecipients({self.ids!r}, {self.numbers!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedRecipients, (self.ids, self.numbers))


@dataclass(frozen=True, slots=True)
class Chunk:
    """Recipients claimed together because they share one payload: one ``sendmsg``."""

    campaign_id: int
    client_message_id: str
    message_id: int
    wire_text: str
    unicode: bool
    parts: int
    recipients: Sequence[ChunkRecipient]  # a tuple, or PackedRecipients from the claim query


class Outcome(NamedTuple):
    """What happened to one recipient, to be written back by ``Store.record``."""

    recipient_id: int
    status: Status
    api_message_id: str | None = None
    error_code: str | None = None
    error_description: str | None = None


class SentOutcomes(Sequence[Outcome]):
    """A chunk's outcomes when every recipient was accepted: JSON ``{"id": "api_message_id"}``.

    The common answer, made where the chunk was sent (a sending process: the other core) into
    the very text the store's SQLite UPDATE reads, so the coordinator neither unpickles nor
    re-encodes an object per recipient. It pickles as that text; the outcomes are made only if
    someone iterates it.
    """

    __slots__ = ("_items", "length", "packed")

    def __init__(self, packed: str, length: int) -> None:
        self.packed = packed
        self.length = length
        self._items: tuple[Outcome, ...] | None = None

    @classmethod
    def of(cls, api_ids: Mapping[int, str], *, api_id_length: int) -> SentOutcomes:
        """Recipient id → its API message ID (cut to the column's width)."""
        clipped = {rid: api_id[:api_id_length] for rid, api_id in api_ids.items()}
        return cls(json.dumps(clipped, separators=(",", ":")), len(clipped))

    def _unpacked(self) -> tuple[Outcome, ...]:
        items = self._items
        if items is None:
            sent = Status.SENT
            items = self._items = tuple(
                Outcome(int(rid), sent, api_id) for rid, api_id in json.loads(self.packed).items()
            )
        return items

    @overload
    def __getitem__(self, index: int) -> Outcome: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome]: ...
    def __getitem__(self, index: int | slice) -> Outcome | Sequence[Outcome]:
        return self._unpacked()[index]

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self._unpacked())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._unpacked() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._unpacked())

    def __repr__(self) -> str:
        return f"SentOutcomes({self.packed!r}, {self.length})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SentOutcomes, (self.packed, self.length))


@dataclass(frozen=True, slots=True)
class InFlight:
    """The rows of one request whose answer was never recorded, and who claimed them when."""

    client_message_id: str
    status: Status  # sending (answer not read yet) or unknown (answer lost)
    claimed_by: str | None
    claimed_at: datetime | None
    recipients: tuple[ChunkRecipient, ...]
