"""The plain values the store takes and returns, so callers never handle SQL rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, overload

from batch_sender.staged import STAGED_FIELDS, STAGED_STATUS, StagedRow, StagedValues
from batch_sender.states import CampaignControl, Status
from batch_sender.store.tables import API_MESSAGE_ID_LENGTH

T = TypeVar("T")

__all__ = [
    "Campaign",
    "Census",
    "Chunk",
    "ChunkRecipient",
    "InFlight",
    "Outcome",
    "PREFIX_DIGITS",
    "PackedRecipients",
    "PrefixTally",
    "SentOutcomes",
    "STAGED_FIELDS",
    "STAGED_STATUS",
    "StagedRow",
    "StagedValues",
]


@dataclass(frozen=True, slots=True)
class Campaign:
    """One campaign row: what was staged, from what, and where it stands."""

    id: int
    name: str
    source: str  # file path or a description of the SQL query
    fingerprint: str  # identity of source + text + options, computed by the caller
    options: dict[str, object]
    status: str  # a states.CampaignStatus value
    total: int  # rows staged, whatever their state
    created_at: datetime  # all times are timezone-aware UTC
    started_at: datetime | None
    finished_at: datetime | None
    control: CampaignControl | None = None  # an operator's pause or cancel
    control_at: datetime | None = None  # when it was set


@dataclass(frozen=True, slots=True)
class Census:
    """A campaign's rows per state (every state, zeros included) and the message parts of the
    rows accepted for sending: the end-of-run summary, counted in one pass."""

    counts: dict[Status, int]
    parts: int
    #: message parts (credits at one per part) per state, zeros left out
    part_counts: dict[Status, int] = field(default_factory=dict)

    @property
    def credits_spent(self) -> int:
        """Parts the gateway accepted (``sent``): what the campaign has cost so far."""
        return self.part_counts.get(Status.SENT, 0)

    @property
    def credits_to_spend(self) -> int:
        """Parts still to send (``pending``, and ``sending``: claimed, not yet answered)."""
        return self.part_counts.get(Status.PENDING, 0) + self.part_counts.get(Status.SENDING, 0)

    @property
    def credits_unknown(self) -> int:
        """Parts of ``unknown`` rows: sent, the answer lost; the gateway may have charged them."""
        return self.part_counts.get(Status.UNKNOWN, 0)


class ChunkRecipient(NamedTuple):
    """A claimed recipient: its row id (to record the outcome against) and number.

    A named tuple, like :class:`Outcome`: the send path makes one per recipient, and a tuple is
    several times cheaper to build (and to pickle) than a frozen dataclass.
    """

    id: int
    msisdn: str


class _Packed(Sequence[T]):
    """A sequence kept as the text(s) it travels as, made into items only on first use.

    Subclasses say how to unpack (``_unpack``) and what they are built from (``_args``: for the
    repr and for pickling, which sends those texts alone).
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: tuple[T, ...] | None = None

    def _unpack(self) -> tuple[T, ...]:
        raise NotImplementedError

    def _args(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _unpacked(self) -> tuple[T, ...]:
        items = self._items
        if items is None:
            items = self._items = self._unpack()
        return items

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...
    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self._unpacked()[index]

    def __len__(self) -> int:
        return len(self._unpacked())

    def __iter__(self) -> Iterator[T]:
        return iter(self._unpacked())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._unpacked() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._unpacked())

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._args()!r}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._args())


class PackedRecipients(_Packed[ChunkRecipient]):
    """A chunk's recipients as the claim query returned them: their ids and their numbers, each
    as one comma-separated text (``"17,18,20"``, ``"27821001234,27821001235,27821001237"``).

    The coordinator claims, hands over and pickles a chunk without making an object of each
    recipient; they are made on first use, by whoever sends the chunk (in a sending process, on
    the other core). It pickles as the two texts. (A claimed number is a pending row's: digits
    only, never a comma.)
    """

    __slots__ = ("ids", "numbers")

    def __init__(self, ids: str, numbers: str) -> None:
        super().__init__()
        self.ids = ids
        self.numbers = numbers

    def _unpack(self) -> tuple[ChunkRecipient, ...]:
        ids = self.ids.split(",")
        numbers = self.numbers.split(",")
        if len(ids) != len(numbers):
            raise ValueError(f"{len(ids)} recipient ids but {len(numbers)} numbers")
        return tuple(map(ChunkRecipient, map(int, ids), numbers))

    def _args(self) -> tuple[str, str]:
        return (self.ids, self.numbers)

    def __len__(self) -> int:
        # counted in the text: the coordinator sizes claims by it (``claim_scale``) and never
        # needs the objects; making them only to count them was 8% of its send phase (py-spy,
        # same text at 1M rows)
        return self.ids.count(",") + 1


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


class SentOutcomes(_Packed[Outcome]):
    """A chunk's outcomes when every recipient was accepted: JSON ``{"id": "api_message_id"}``.

    The common answer, made where the chunk was sent (a sending process: the other core) into
    the very text the store's SQLite UPDATE reads, so the coordinator neither unpickles nor
    re-encodes an object per recipient. It pickles as that text; the outcomes are made only if
    someone iterates it.
    """

    __slots__ = ("length", "packed")

    def __init__(self, packed: str, length: int) -> None:
        super().__init__()
        self.packed = packed
        self.length = length

    @classmethod
    def of(
        cls, api_ids: Mapping[int, str], *, api_id_length: int = API_MESSAGE_ID_LENGTH
    ) -> SentOutcomes:
        """Recipient id → its API message ID (cut to the column's width, which the store owns)."""
        clipped = {rid: api_id[:api_id_length] for rid, api_id in api_ids.items()}
        return cls(json.dumps(clipped, separators=(",", ":")), len(clipped))

    def _unpack(self) -> tuple[Outcome, ...]:
        sent = Status.SENT
        return tuple(
            Outcome(int(rid), sent, api_id) for rid, api_id in json.loads(self.packed).items()
        )

    def _args(self) -> tuple[str, int]:
        return (self.packed, self.length)

    def __len__(self) -> int:  # known without unpacking
        return self.length


@dataclass(frozen=True, slots=True)
class InFlight:
    """The rows of one request whose answer was never recorded, and who claimed them when."""

    client_message_id: str
    status: Status  # sending (answer not read yet) or unknown (answer lost)
    claimed_by: str | None
    claimed_at: datetime | None
    recipients: tuple[ChunkRecipient, ...]


PREFIX_DIGITS = 5  # digits of a number that select its route and price (country + network)


@dataclass(slots=True)
class PrefixTally:
    """Message parts per number prefix, with one real number of each prefix to ask about.

    Fill it while preparing recipients (``add(msisdn, parts)``); memory grows with the number of
    distinct prefixes, not of recipients.
    """

    digits: int = PREFIX_DIGITS
    parts: dict[str, int] = field(default_factory=dict)
    recipients: dict[str, int] = field(default_factory=dict)
    sample: dict[str, str] = field(default_factory=dict)

    def add(self, msisdn: str, parts: int) -> None:
        prefix = msisdn[: self.digits]
        self.parts[prefix] = self.parts.get(prefix, 0) + parts
        self.recipients[prefix] = self.recipients.get(prefix, 0) + 1
        self.sample.setdefault(prefix, msisdn)
