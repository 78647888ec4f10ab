"""A delivery report and what recording it did: the value types of the receipt path.

A report is one status of one message, from a callback or from ``querymsg``; ``matching`` finds
its recipient row, ``receipts`` applies it, ``inbox`` keeps it until its row is recorded.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Applied", "DeliveryReport"]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One status of one message, as a callback or ``querymsg`` told it."""

    status: str  # 3-digit code (statuses.normalise)
    api_message_id: str | None = None
    client_message_id: str | None = None
    to: str | None = None  # with client_message_id, identifies a message of a multi-number request
    status_at: datetime | None = None  # when the status changed, per the gateway
    charge: float | None = None  # credits
    source: str = "callback"
    recipient_id: int | None = None  # when the sender knows the row (querymsg of a tracked row)


class Applied(enum.StrEnum):
    """What recording one report did."""

    UPDATED = "updated"  # the recipient's delivery status moved forward
    RECORDED = "recorded"  # kept in the history only (late or out of order)
    DUPLICATE = "duplicate"  # this status of this message was recorded before
    KEPT = "kept"  # no recipient has this apiMsgId yet: kept, applied when it is recorded
    UNKNOWN = "unknown"  # no message ID to keep it by, and nothing matched: nothing written


def _naive(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value
