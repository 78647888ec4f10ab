"""Operators' controls: the suppression list, and each recipient's time-zone key for windows.

Adds ``suppressions`` (one row per opted-out number: normalised international digits, where the
opt-out came from, when) and ``recipients.tz_key``: the phonenumbers time-zone prefix of the
number, filled when a run with ``--window`` first needs it (NULL until then).

Revision ID: 0003_operator_controls
Revises: 0002_delivery_tracking
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003_operator_controls"
down_revision: str | Sequence[str] | None = "0002_delivery_tracking"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in batch_sender.store.tables as of this revision.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    """Create ``suppressions``; add ``recipients.tz_key``."""
    op.create_table(
        "suppressions",
        sa.Column("msisdn", sa.String(64), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("note", sa.String(255), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("msisdn", name="pk_suppressions"),
        **MYSQL_OPTIONS,
    )
    op.add_column("recipients", sa.Column("tz_key", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drop ``recipients.tz_key`` and ``suppressions``."""
    op.drop_column("recipients", "tz_key")
    op.drop_table("suppressions")
