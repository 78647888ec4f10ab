"""The results schema as SQLAlchemy Core tables: the model Alembic revisions must match.

Tables are created only by the revisions in ``batch_sender/migrations``; this module is what the
queries are written against, and ``tests/test_migrations.py`` checks that the two agree.

Times are stored as *naive UTC* in a plain ``DATETIME``/``TIMESTAMP WITHOUT TIME ZONE`` column
(microsecond precision on every engine: ``DATETIME(6)`` on MariaDB/MySQL) and handed back as
timezone-aware UTC ``datetime`` objects by :class:`UTCDateTime`. A plain column type behaves the
same on SQLite, PostgreSQL and MariaDB (no session time zone conversions), and reads naturally in
reports: every time in the database is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    column,
    table,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from batch_sender.states import CampaignControl, CampaignStatus

__all__ = [
    "CAMPAIGN_CONTROLS",
    "CAMPAIGN_STATUSES",
    "UTCDateTime",
    "campaigns",
    "delivery_events",
    "messages",
    "metadata",
    "rate_limits",
    "receipt_inbox",
    "recipients",
    "results_view",
    "summary_view",
    "suppressions",
]

#: Life cycle of a campaign row, in order of appearance.
CAMPAIGN_STATUSES = tuple(CampaignStatus)
#: An operator's control of a campaign (``campaigns.control``; NULL: none): ``paused`` until
#: ``batch-sender resume``, or ``cancelled`` for good.
CAMPAIGN_CONTROLS = tuple(CampaignControl)

#: Column widths (characters); values longer than these are truncated on the way in.
MSISDN_LENGTH = 64
ERROR_CODE_LENGTH = 8
ERROR_DESCRIPTION_LENGTH = 255
API_MESSAGE_ID_LENGTH = 64
CLIENT_MESSAGE_ID_LENGTH = 32  # Clickatell's climsgid limit

# MariaDB's TEXT holds 64 KiB; long UCS-2 hex payloads get MEDIUMTEXT (16 MiB).
LONG_TEXT: TypeEngine[str] = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (cheap autoincrement).
BIG_ID: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
# Credits (callbacks send e.g. "0.8"); exact decimal in the database, float in Python.
CHARGE: TypeEngine[float] = Numeric(12, 4, asdecimal=False)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_MYSQL_OPTIONS: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` stored as naive UTC, identically on every engine."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Microsecond precision on MariaDB/MySQL, whose DATETIME defaults to whole seconds."""
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC and drop the zone; naive values are taken as UTC already."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Mark what the database returns as UTC."""
        return None if value is None else value.replace(tzinfo=UTC)


campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("source", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("options", Text, nullable=False),  # JSON object
    Column("status", String(20), nullable=False),  # one of CAMPAIGN_STATUSES
    Column("total", Integer, nullable=False, server_default="0"),  # rows staged
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    # campaign control (revision 0009): an operator's pause or cancel, and when; apart from
    # status, which runs write: a pause outlives the run it stopped
    Column("control", String(12), nullable=True),  # NULL, or one of CAMPAIGN_CONTROLS
    Column("control_at", UTCDateTime(), nullable=True),
    UniqueConstraint("name"),
    **_MYSQL_OPTIONS,
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("digest", String(64), nullable=False),  # identity of the payload, from prepare
    Column("wire_text", LONG_TEXT, nullable=False),  # as sent: GSM text or UCS-2 hex
    # what a person reads (revision 0007): the text, UCS-2 decoded; a binary payload's hex
    Column("text", LONG_TEXT, nullable=True),
    Column("unicode", Boolean, nullable=False),
    Column("parts", Integer, nullable=False),
    UniqueConstraint("campaign_id", "digest"),
    **_MYSQL_OPTIONS,
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id"), nullable=False),
    Column("row_no", Integer, nullable=False),  # position in the source, from 1
    Column("msisdn", String(MSISDN_LENGTH), nullable=False),  # normalised, or raw if rejected
    Column("status", String(12), nullable=False),  # states.Status values
    Column("message_id", Integer, ForeignKey("messages.id"), nullable=True),
    Column("parts", Integer, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),  # requests that carried it
    Column("client_message_id", String(CLIENT_MESSAGE_ID_LENGTH), nullable=True),
    Column("api_message_id", String(API_MESSAGE_ID_LENGTH), nullable=True),
    Column("error_code", String(ERROR_CODE_LENGTH), nullable=True),
    Column("error_description", String(ERROR_DESCRIPTION_LENGTH), nullable=True),
    Column("claimed_by", String(64), nullable=True),  # worker id holding the claim
    Column("claimed_at", UTCDateTime(), nullable=True),  # start of the claim (lease)
    Column("updated_at", UTCDateTime(), nullable=False),
    # delivery (revision 0002): the latest status the gateway reported, its time, the charge
    Column("delivery_status", String(3), nullable=True),  # 3-digit code, delivery.statuses
    Column("delivered_at", UTCDateTime(), nullable=True),  # time of that status (gateway's)
    Column("charge", CHARGE, nullable=True),  # credits, from callbacks
    # send windows (revision 0003): phonenumbers time-zone prefix, filled when first needed
    Column("tz_key", String(16), nullable=True),
    # the source row as staged (revision 0007): a JSON object of column → value, every column
    # (the number as written included), so the record answers without the file
    Column("fields", LONG_TEXT, nullable=True),
    UniqueConstraint("campaign_id", "row_no"),
    # claiming: pending rows of a campaign, one message at a time, lowest ids first; on SQLite
    # only the pending rows (revision 0006), so claimed rows leave it once and recording never
    # touches it (the claim names 'pending' as a literal, as a partial index needs)
    Index(
        None,
        "campaign_id",
        "status",
        "message_id",
        "id",
        sqlite_where=text("status = 'pending'"),
    ),
    Index(None, "campaign_id", "msisdn"),  # duplicate marking
    # No index on api_message_id (revision 0005): its random keys cost more than half of
    # recording an outcome on a large campaign; delivery callbacks match by cliMsgId + to.
    # Partial where the engine can (not MariaDB), so staging does not index millions of NULLs.
    Index(  # settling with querymsg, delivery callbacks
        None,
        "campaign_id",
        "client_message_id",
        sqlite_where=text("client_message_id IS NOT NULL"),
        postgresql_where=text("client_message_id IS NOT NULL"),
    ),
    **_MYSQL_OPTIONS,
)

#: Every distinct delivery status a message reported (callback or querymsg), oldest first.
delivery_events = Table(
    "delivery_events",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("recipient_id", BIG_ID, ForeignKey("recipients.id"), nullable=False),
    Column("status", String(3), nullable=False),
    Column("status_at", UTCDateTime(), nullable=True),  # the gateway's timestamp
    Column("charge", CHARGE, nullable=True),
    Column("source", String(10), nullable=False),  # "callback" or "querymsg"
    Column("received_at", UTCDateTime(), nullable=False),
    UniqueConstraint("recipient_id", "status"),  # a repeated report is recorded once
    **_MYSQL_OPTIONS,
)

#: Receipts that matched no recipient yet (revision 0008): kept, answered 2xx, and applied exactly
#: once when their apiMsgId is recorded (a callback can overtake the recording of the send answer).
#: Small (it holds only what is waiting), so its index is cheap where one on recipients is not.
receipt_inbox = Table(
    "receipt_inbox",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("api_message_id", String(API_MESSAGE_ID_LENGTH), nullable=False),
    Column("status", String(3), nullable=False),
    Column("status_at", UTCDateTime(), nullable=True),  # the gateway's timestamp
    Column("charge", CHARGE, nullable=True),
    Column("client_message_id", String(CLIENT_MESSAGE_ID_LENGTH), nullable=True),
    Column("msisdn", String(MSISDN_LENGTH), nullable=True),
    Column("source", String(10), nullable=False),  # "callback" or "querymsg"
    Column("received_at", UTCDateTime(), nullable=False),
    # when to look for the ID among the recorded rows (a scan, outside the write lock); NULL:
    # no more looking, the recording of the ID applies it (inbox.apply_recorded)
    Column("sweep_at", UTCDateTime(), nullable=True),
    UniqueConstraint("api_message_id", "status"),  # a repeated receipt is kept once
    **_MYSQL_OPTIONS,
)

#: One send schedule per gateway account, shared by every worker on any machine (revision 0004):
#: a GCRA "theoretical arrival time" that workers push forward under a row lock to reserve slots.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("account", String(200), primary_key=True),  # api_id:user@host, never a password
    Column("next_at", Double(), nullable=False),  # next free slot: epoch s, database clock
    Column("rate", Double(), nullable=False),  # units/s of the latest reservation, for operators
    Column("updated_at", UTCDateTime(), nullable=False),
    **_MYSQL_OPTIONS,
)

#: The suppression (opt-out) list (revision 0003): numbers never sent to, in any campaign.
suppressions = Table(
    "suppressions",
    metadata,
    Column("msisdn", String(MSISDN_LENGTH), primary_key=True),  # normalised international digits
    Column("source", String(20), nullable=False),  # "cli", "import" or "mo" (a STOP reply)
    Column("note", String(255), nullable=True),  # e.g. the text of the STOP reply
    Column("created_at", UTCDateTime(), nullable=False),
    **_MYSQL_OPTIONS,
)

# The views are created by raw SQL in a revision and are not part of ``metadata`` (so schema
# comparison ignores them); these clauses only let queries select from them in Core.

#: ``results``: one row per recipient, the columns promised by DESIGN.md §5 (+ campaign_id).
results_view = table(
    "results",
    column("campaign_id", Integer),
    column("campaign", String),
    column("row_no", Integer),
    column("msisdn", String),
    column("status", String),
    column("api_message_id", String),
    column("error_code", String),
    column("error_description", String),
    column("client_message_id", String),
    column("parts", Integer),
    column("attempts", Integer),
    column("updated_at", UTCDateTime()),
    column("delivery_status", String),
    column("delivery_status_name", String),
    column("delivered_at", UTCDateTime()),
    column("charge", CHARGE),
    column("text", Text),  # revision 0007: the message as read (messages.text)
    column("fields", Text),  # revision 0007: the source row, JSON (recipients.fields)
)

#: ``campaign_summary``: recipients and message parts per campaign and status.
summary_view = table(
    "campaign_summary",
    column("campaign_id", Integer),
    column("campaign", String),
    column("status", String),
    column("recipients", Integer),
    column("parts", Integer),
    column("delivered", Integer),  # delivery status 004
    column("undelivered", Integer),  # a final delivery error (005, 006, 007, 009, 010, 012, 014)
    column("charge", CHARGE),  # credits charged, from callbacks
)
