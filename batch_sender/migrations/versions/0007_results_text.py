"""What each person got: the readable text and the source row, in ``results``.

Adds ``messages.text`` (the message as a person reads it: UCS-2 hex decoded; GSM text and a
binary payload's hex as they are) and ``recipients.fields`` (the source row as staged, a JSON
object of column → value, the number as written included), and recreates the ``results`` view
with both as ``text`` and ``fields``, so "what exactly did this person get, and who were they"
is one query the morning after, when the CSV may be gone::

    SELECT row_no, msisdn, status, text, json_extract(fields, '$.name') FROM results  -- SQLite
    SELECT row_no, msisdn, status, text, fields::json ->> 'name' FROM results         -- PostgreSQL
    SELECT row_no, msisdn, status, text, JSON_VALUE(fields, '$.name') FROM results   -- MariaDB

Existing messages get their text here; rows staged before this revision have no ``fields``
(NULL). Every column the view had is kept, with the same name and meaning.

Revision ID: 0007_results_text
Revises: 0006_sqlite_pending_index
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007_results_text"
down_revision: str | Sequence[str] | None = "0006_sqlite_pending_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of batch_sender.store.tables.LONG_TEXT as of this revision.
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
BACKFILL_BATCH = 1000  # messages decoded per UPDATE round trip

# Frozen copy of batch_sender.delivery.statuses.NAMES as of revision 0002.
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
_NAME_CASE = (
    "CASE r.delivery_status "
    + " ".join(f"WHEN '{code}' THEN '{name}'" for code, name in STATUS_NAMES.items())
    + " END"
)

_COLUMNS_0002 = f"""
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
    r.charge AS charge"""

RESULTS_VIEW = f"""
CREATE VIEW results AS
SELECT{_COLUMNS_0002},
    m.text AS text,
    r.fields AS fields
FROM recipients r
JOIN campaigns c ON c.id = r.campaign_id
LEFT JOIN messages m ON m.id = r.message_id
"""

# The view as revision 0002 created it, restored by downgrade().
RESULTS_VIEW_0002 = f"""
CREATE VIEW results AS
SELECT{_COLUMNS_0002}
FROM recipients r
JOIN campaigns c ON c.id = r.campaign_id
"""


def upgrade() -> None:
    """Add ``messages.text`` (filled for existing messages) and ``recipients.fields``; recreate
    the ``results`` view with both."""
    op.execute("DROP VIEW IF EXISTS results")
    op.add_column("messages", sa.Column("text", LONG_TEXT, nullable=True))
    op.add_column("recipients", sa.Column("fields", LONG_TEXT, nullable=True))
    _backfill_text()
    op.execute(RESULTS_VIEW)


def downgrade() -> None:
    """Drop both columns; restore the ``results`` view of revision 0002."""
    op.execute("DROP VIEW IF EXISTS results")
    op.drop_column("recipients", "fields")
    op.drop_column("messages", "text")
    op.execute(RESULTS_VIEW_0002)


def _backfill_text() -> None:
    """GSM messages read as they travel; UCS-2 hex is decoded (in Python: no portable SQL)."""
    bind = op.get_bind()
    messages = sa.table(
        "messages",
        sa.column("id", sa.Integer),
        sa.column("wire_text", sa.Text),
        sa.column("unicode", sa.Boolean),
        sa.column("text", sa.Text),
    )
    bind.execute(
        messages.update().where(messages.c.unicode == sa.false()).values(text=messages.c.wire_text)
    )
    rows = bind.execute(
        sa.select(messages.c.id, messages.c.wire_text).where(messages.c.unicode == sa.true())
    ).all()
    update = (
        messages.update()
        .where(messages.c.id == sa.bindparam("message_id"))
        .values(text=sa.bindparam("readable"))
    )
    for start in range(0, len(rows), BACKFILL_BATCH):
        bind.execute(
            update,
            [
                {"message_id": message_id, "readable": _decoded(wire_text)}
                for message_id, wire_text in rows[start : start + BACKFILL_BATCH]
            ],
        )


def _decoded(wire_text: str) -> str:
    """UCS-2 hex as text (a frozen copy of ``sms.readable`` for unicode messages)."""
    try:
        return bytes.fromhex(wire_text).decode("utf-16-be")
    except ValueError:  # (UnicodeDecodeError is one) malformed: keep what was sent
        return wire_text
