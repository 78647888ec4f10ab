"""Shared rate limit: one token-bucket row per account, for many workers (placeholder until filled).

Revision ID: 0004_shared_rate_limit
Revises: 0003_operator_controls
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004_shared_rate_limit"
down_revision: str | Sequence[str] | None = "0003_operator_controls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
