"""Initial schema: campaigns, messages, recipients, and the results and summary views.

Revision ID: 0001_initial_schema
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001_initial_schema"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in batch_sender.store.tables as of this revision.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MYSQL_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

RESULTS_VIEW = """
CREATE VIEW results AS
SELECT
    r.campaign_id AS campaign_id,
    c.name AS campaign,
    r.row_no AS row_no,
    r.msisdn AS msisdn,
    r.status AS status,
    r.api_message_id AS api_message_id,
    r.error_code AS error_code,
    r.error_description AS error_description,
    r.client_message_id AS client_message_id,
    r.parts AS parts,
    r.attempts AS attempts,
    r.updated_at AS updated_at
FROM recipients r
JOIN campaigns c ON c.id = r.campaign_id
"""

SUMMARY_VIEW = """
CREATE VIEW campaign_summary AS
SELECT
    c.id AS campaign_id,
    c.name AS campaign,
    r.status AS status,
    COUNT(*) AS recipients,
    COALESCE(SUM(r.parts), 0) AS parts
FROM recipients r
JOIN campaigns c ON c.id = r.campaign_id
GROUP BY c.id, c.name, r.status
"""


def upgrade() -> None:
    """Create the three tables, their indexes, and the ``results``/``campaign_summary`` views."""
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.UniqueConstraint("name", name="uq_campaigns_name"),
        **MYSQL_OPTIONS,
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("wire_text", LONG_TEXT, nullable=False),
        sa.Column("unicode", sa.Boolean(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_messages_campaign_id_campaigns"
        ),
        sa.UniqueConstraint("campaign_id", "digest", name="uq_messages_campaign_id_digest"),
        **MYSQL_OPTIONS,
    )
    op.create_table(
        "recipients",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("row_no", sa.Integer(), nullable=False),
        sa.Column("msisdn", sa.String(64), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("parts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("client_message_id", sa.String(32), nullable=True),
        sa.Column("api_message_id", sa.String(64), nullable=True),
        sa.Column("error_code", sa.String(8), nullable=True),
        sa.Column("error_description", sa.String(255), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_at", UTC_DATETIME, nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recipients"),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_recipients_campaign_id_campaigns"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_recipients_message_id_messages"
        ),
        sa.UniqueConstraint("campaign_id", "row_no", name="uq_recipients_campaign_id_row_no"),
        **MYSQL_OPTIONS,
    )
    op.create_index(
        "ix_recipients_campaign_id_status_message_id_id",
        "recipients",
        ["campaign_id", "status", "message_id", "id"],
    )
    op.create_index("ix_recipients_campaign_id_msisdn", "recipients", ["campaign_id", "msisdn"])
    # partial where supported: staging does not index millions of NULLs
    op.create_index(
        "ix_recipients_api_message_id",
        "recipients",
        ["api_message_id"],
        sqlite_where=sa.text("api_message_id IS NOT NULL"),
        postgresql_where=sa.text("api_message_id IS NOT NULL"),
    )
    op.create_index(
        "ix_recipients_campaign_id_client_message_id",
        "recipients",
        ["campaign_id", "client_message_id"],
        sqlite_where=sa.text("client_message_id IS NOT NULL"),
        postgresql_where=sa.text("client_message_id IS NOT NULL"),
    )
    op.execute(RESULTS_VIEW)
    op.execute(SUMMARY_VIEW)


def downgrade() -> None:
    """Drop the views, then the tables (children first)."""
    op.execute("DROP VIEW IF EXISTS campaign_summary")
    op.execute("DROP VIEW IF EXISTS results")
    op.drop_table("recipients")
    op.drop_table("messages")
    op.drop_table("campaigns")
