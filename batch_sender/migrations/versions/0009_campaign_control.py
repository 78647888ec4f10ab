"""Campaign control: an operator's pause or cancel, recorded on the campaign.

Adds ``campaigns.control`` (NULL: run normally; ``paused``; ``cancelled``) and
``campaigns.control_at`` (when it was set). Workers read it before they claim (at most once a
second), so a ``batch-sender pause``/``cancel`` reaches every worker on every machine sharing the
database. It is apart from ``campaigns.status``, which the runs themselves write (``running``,
``finished``, …): a pause outlives the run it stopped, and ``resume`` clears it without losing
what the last run reported. Cancelled recipients get the new recipient state ``cancelled`` (a
string in ``recipients.status``: no schema change).

Revision ID: 0009_campaign_control
Revises: 0008_receipt_inbox
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0009_campaign_control"
down_revision: str | Sequence[str] | None = "0008_receipt_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of batch_sender.store.tables.UTCDateTime's column type as of this revision.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    """Add ``campaigns.control`` and ``campaigns.control_at``."""
    op.add_column("campaigns", sa.Column("control", sa.String(12), nullable=True))
    op.add_column("campaigns", sa.Column("control_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    """Drop them; cancelled recipients stay ``cancelled`` (an older version counts them)."""
    op.drop_column("campaigns", "control_at")
    op.drop_column("campaigns", "control")
