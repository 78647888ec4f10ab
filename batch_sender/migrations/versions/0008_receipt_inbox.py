"""Keep receipts that arrive before their apiMsgId is recorded: the ``receipt_inbox`` table.

A delivery callback can overtake the recording of the ``sendmsg`` answer; one that carries only
an apiMsgId then matches no recipient. It is kept here (answered 2xx once committed) and applied
exactly once when the ID is recorded. The table holds only what is waiting, so its unique index
on (api_message_id, status) is small and cheap, unlike one on recipients.api_message_id, which
revision 0005 dropped because recording outcomes paid for it on every row.

Revision ID: 0008_receipt_inbox
Revises: 0007_results_text
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0008_receipt_inbox"
down_revision: str | Sequence[str] | None = "0007_results_text"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "receipt_inbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("api_message_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(3), nullable=False),
        sa.Column("status_at", _TIME, nullable=True),
        sa.Column("charge", sa.Numeric(12, 4), nullable=True),
        sa.Column("client_message_id", sa.String(32), nullable=True),
        sa.Column("msisdn", sa.String(64), nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("sweep_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_receipt_inbox"),
        sa.UniqueConstraint(
            "api_message_id", "status", name="uq_receipt_inbox_api_message_id_status"
        ),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("receipt_inbox")
