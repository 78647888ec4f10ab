"""The results database: schema, migrations and the recipient queue (``Store``).

``Store`` is the only door to SQL in batch-sender; ``tables`` is the schema model, ``migrate``
drives Alembic, ``records`` holds the values passed in and out.
"""

from __future__ import annotations

from batch_sender.store.facade import Store
from batch_sender.store.records import (
    Campaign,
    Census,
    Chunk,
    ChunkRecipient,
    InFlight,
    Outcome,
    SentOutcomes,
    StagedRow,
)
from batch_sender.store.tables import CAMPAIGN_STATUSES

__all__ = [
    "CAMPAIGN_STATUSES",
    "Campaign",
    "Census",
    "Chunk",
    "ChunkRecipient",
    "InFlight",
    "Outcome",
    "SentOutcomes",
    "StagedRow",
    "Store",
]
