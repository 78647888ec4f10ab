"""On SQLite, index only the pending rows for claiming (a partial index).

The claim index (campaign_id, status, message_id, id) moved each row twice: out of 'pending'
into 'sending' when claimed, then into 'sent' when recorded, one B-tree delete and one insert
each time. Restricted to ``status = 'pending'`` it loses a row once, when the row is claimed, and
recording no longer touches it. Measured on a 1,000,000-row SQLite campaign (raw sqlite3, claim
and record of 1,600 rows per transaction): 19.5 → 15.1 µs of CPU per recipient. The claim query
names the status as a literal, which is what lets SQLite use a partial index.

PostgreSQL and MariaDB keep the full index (MariaDB has no partial indexes; PostgreSQL's other
queries by status keep their index there). Queries by another status (settling in-flight rows,
counts, reports) scan the campaign on SQLite: a second or less for a million rows, a few times
per run.

Revision ID: 0006_sqlite_pending_index
Revises: 0005_drop_api_message_id_index
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_sqlite_pending_index"
down_revision: str | Sequence[str] | None = "0005_drop_api_message_id_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_recipients_campaign_id_status_message_id_id"
_COLUMNS = ["campaign_id", "status", "message_id", "id"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index(_NAME, table_name="recipients")
    op.create_index(_NAME, "recipients", _COLUMNS, sqlite_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index(_NAME, table_name="recipients")
    op.create_index(_NAME, "recipients", _COLUMNS)
