"""Delivery tracking: delivery status, charge and their history (placeholder until filled).

Revision ID: 0002_delivery_tracking
Revises: 0001_initial_schema
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0002_delivery_tracking"
down_revision: str | Sequence[str] | None = "0001_initial_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
