"""Shared rate limit: one send schedule per gateway account, for any number of workers.

Adds ``rate_limits``: a row per account holding the GCRA "theoretical arrival time" (``next_at``,
seconds since the epoch on the database's clock). Workers on any machine reserve slots by pushing
it forward under a row lock, so that together they keep to one ``--rate`` (DESIGN.md §7).

Revision ID: 0004_shared_rate_limit
Revises: 0003_operator_controls
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004_shared_rate_limit"
down_revision: str | Sequence[str] | None = "0003_operator_controls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in batch_sender.store.tables as of this revision.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
MYSQL_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    """Create ``rate_limits``."""
    op.create_table(
        "rate_limits",
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("next_at", sa.Double(), nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_rate_limits"),
        **MYSQL_OPTIONS,
    )


def downgrade() -> None:
    """Drop ``rate_limits``."""
    op.drop_table("rate_limits")
