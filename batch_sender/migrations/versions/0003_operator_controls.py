"""Operators' controls: the suppression list and send-window columns (placeholder until filled).

Revision ID: 0003_operator_controls
Revises: 0002_delivery_tracking
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003_operator_controls"
down_revision: str | Sequence[str] | None = "0002_delivery_tracking"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
