"""The plain values the store takes and returns, so callers never handle SQL rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from batch_sender.states import Status

__all__ = [
    "Campaign",
    "Chunk",
    "ChunkRecipient",
    "InFlight",
    "Outcome",
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


@dataclass(frozen=True, slots=True)
class Chunk:
    """Recipients claimed together because they share one payload: one ``sendmsg``."""

    campaign_id: int
    client_message_id: str
    message_id: int
    wire_text: str
    unicode: bool
    parts: int
    recipients: tuple[ChunkRecipient, ...]


class Outcome(NamedTuple):
    """What happened to one recipient, to be written back by ``Store.record``."""

    recipient_id: int
    status: Status
    api_message_id: str | None = None
    error_code: str | None = None
    error_description: str | None = None


@dataclass(frozen=True, slots=True)
class InFlight:
    """The rows of one request whose answer was never recorded, and who claimed them when."""

    client_message_id: str
    status: Status  # sending (answer not read yet) or unknown (answer lost)
    claimed_by: str | None
    claimed_at: datetime | None
    recipients: tuple[ChunkRecipient, ...]
