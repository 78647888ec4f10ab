"""Delivery tracking: delivery status, its time and charge per recipient, and their history.

Adds ``recipients.delivery_status`` (3-digit gateway code), ``delivered_at`` (time of that status
as the gateway reported it) and ``charge`` (credits), the ``delivery_events`` history table (one
row per distinct status a message reported, from a callback or ``querymsg``), and recreates the
``results`` and ``campaign_summary`` views with delivery columns. Every column the views had
before is kept, with the same name and meaning (DESIGN.md §5).

Revision ID: 0002_delivery_tracking
Revises: 0001_initial_schema
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002_delivery_tracking"
down_revision: str | Sequence[str] | None = "0001_initial_schema"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in batch_sender.store.tables as of this revision.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CHARGE = sa.Numeric(12, 4)
MYSQL_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

# Frozen copy of batch_sender.delivery.statuses.NAMES as of this revision.
STATUS_NAMES = {
    "001": "Message unknown",
    "002": "Message queued",
    "003": "Delivered to gateway",
    "004": "Received by recipient",
    "005": "Error with message",
    "006": "User cancelled message delivery",
    "007": "Error delivering message",
    "008": "OK",
    "009": "Routing error",
    "010": "Message expired",
    "011": "Message queued for later delivery",
    "012": "Out of credit",
    "014": "Maximum MT limit exceeded",
}
FAILED_FINAL = ("005", "006", "007", "009", "010", "012", "014")

_NAME_CASE = (
    "CASE r.delivery_status "
    + " ".join(f"WHEN '{code}' THEN '{name}'" for code, name in STATUS_NAMES.items())
    + " END"
)
_FAILED_IN = ", ".join(f"'{code}'" for code in FAILED_FINAL)

RESULTS_VIEW = f"""
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
    r.updated_at AS updated_at,
    r.delivery_status AS delivery_status,
    {_NAME_CASE} AS delivery_status_name,
    r.delivered_at AS delivered_at,
    r.charge AS charge
FROM recipients r
JOIN campaigns c ON c.id = r.campaign_id
"""

SUMMARY_VIEW = f"""
CREATE VIEW campaign_summary AS
SELECT
    c.id AS campaign_id,
    c.name AS campaign,
    r.status AS status,
    COUNT(*) AS recipients,
    COALESCE(SUM(r.parts), 0) AS parts,
    SUM(CASE WHEN r.delivery_status = '004' THEN 1 ELSE 0 END) AS delivered,
    SUM(CASE WHEN r.delivery_status IN ({_FAILED_IN}) THEN 1 ELSE 0 END) AS undelivered,
    COALESCE(SUM(r.charge), 0) AS charge
FROM recipients r
JOIN campaigns c ON c.id = r.campaign_id
GROUP BY c.id, c.name, r.status
"""

# The views as revision 0001 created them, restored by downgrade().
RESULTS_VIEW_0001 = """
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

SUMMARY_VIEW_0001 = """
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


def _drop_views() -> None:
    op.execute("DROP VIEW IF EXISTS campaign_summary")
    op.execute("DROP VIEW IF EXISTS results")


def upgrade() -> None:
    """Add the delivery columns and history table; recreate the views with delivery columns."""
    _drop_views()
    op.add_column("recipients", sa.Column("delivery_status", sa.String(3), nullable=True))
    op.add_column("recipients", sa.Column("delivered_at", UTC_DATETIME, nullable=True))
    op.add_column("recipients", sa.Column("charge", CHARGE, nullable=True))
    op.create_table(
        "delivery_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("recipient_id", BIG_ID, nullable=False),
        sa.Column("status", sa.String(3), nullable=False),
        sa.Column("status_at", UTC_DATETIME, nullable=True),
        sa.Column("charge", CHARGE, nullable=True),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_events"),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipients.id"],
            name="fk_delivery_events_recipient_id_recipients",
        ),
        sa.UniqueConstraint(
            "recipient_id", "status", name="uq_delivery_events_recipient_id_status"
        ),
        **MYSQL_OPTIONS,
    )
    op.execute(RESULTS_VIEW)
    op.execute(SUMMARY_VIEW)


def downgrade() -> None:
    """Drop the history table and delivery columns; restore the views of revision 0001."""
    _drop_views()
    op.drop_table("delivery_events")
    op.drop_column("recipients", "charge")
    op.drop_column("recipients", "delivered_at")
    op.drop_column("recipients", "delivery_status")
    op.execute(RESULTS_VIEW_0001)
    op.execute(SUMMARY_VIEW_0001)
