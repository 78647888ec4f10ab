"""Settings for a run, built once by the CLI (options and environment) and passed down frozen.

Only the CLI reads the environment; library code receives these objects. Tunables are named
constants with their units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AUTO_CONCURRENCY",
    "AUTO_THREADS",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONCURRENCY",
    "DB_FILE_NAME",
    "DEFAULT_GATEWAY_URL",
    "DEFAULT_LEASE",
    "DEFAULT_MAX_PROCESSING",
    "DEFAULT_STOP_KEYWORDS",
    "DEFAULT_MAX_WAIT",
    "MAX_CHUNK_SIZE",
    "MAX_CONCURRENCY",
    "PARAM_NAMES",
    "PARAM_RULES",
    "SEND_PROCESS_MIN_ROWS",
    "SEND_PROCESS_MODES",
    "GatewaySettings",
    "MessageOptions",
    "RunSettings",
    "check_param",
]

#: the default results database: this file in the user's state directory (see cli.common)
DB_FILE_NAME = "batch_sender.db"
DEFAULT_GATEWAY_URL = "https://api.clickatell.com/soap/document_literal/webservice"
DEFAULT_CHUNK_SIZE = 100  # recipients per sendmsg request
MAX_CHUNK_SIZE = 300  # the SOAP API's limit of <to> elements per request
#: ``--concurrency auto``: requests in flight found as the run goes (``send.adaptive``)
AUTO_CONCURRENCY = "auto"
DEFAULT_CONCURRENCY = AUTO_CONCURRENCY  # requests in flight
MAX_CONCURRENCY = 1024  # the most requests in flight, fixed or auto
#: sending threads under ``auto`` when the client cannot go on an event loop (a test transport)
AUTO_THREADS = 8
DEFAULT_MAX_WAIT = 3600.0  # seconds: the longest ERR 130 pause before the run stops instead
DEFAULT_MAX_ATTEMPTS = 6  # tries of one request on retryable errors
DEFAULT_MAX_PARTS = 35  # the gateway's ceiling on message parts (concat)
DEFAULT_LEASE = 300.0  # seconds a claim stays a live worker's without a heartbeat
#: seconds the gateway may hold a request before accepting it (settling waits this long before
#: trusting ERR 104, "never seen"): the default --read-timeout
DEFAULT_MAX_PROCESSING = 60.0
#: first words of an inbound reply that opt its sender out (``callbacks --stop-keyword``)
DEFAULT_STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "OPT-OUT"}
)
#: ``--send-process``: requests go out from a process of their own ("always"), from threads of
#: the run's process ("never"), or the former for campaigns of at least SEND_PROCESS_MIN_ROWS
SEND_PROCESS_MODES = ("auto", "always", "never")
SEND_PROCESS_MIN_ROWS = 20_000

#: What ``--param KEY=VALUE`` accepts, checked by the CLI before anything is staged: KEY → the
#: values the gateway takes (its reference, /work/shared/reference) as (low, high) integer bounds.
#: ``concat`` is not here: every request carries the parts its text needs (``--max-parts``).
PARAM_RULES: dict[str, tuple[int, int, str]] = {
    "deliv_ack": (0, 1, "0 or 1"),
    "deliv_time": (0, 10080, "0-10080 minutes from now"),
    "validity": (1, 10080, "1-10080 minutes"),
    "max_credits": (1, 1000, "1-1000 whole credits"),
    "req_feat": (0, 0xFFFF, "a 0-65535 feature bitmask"),
    "escalate": (0, 1, "0 or 1"),
    "mo": (0, 1, "0 or 1"),
    "queue": (1, 3, "1, 2 or 3, 1 first"),
}
#: sendmsg elements that --param may set (the rest have options of their own).
PARAM_NAMES = frozenset(PARAM_RULES)


def check_param(key: str, value: str) -> str | None:
    """Why ``--param key=value`` would be refused by the gateway, or None if it is fine."""
    rule = PARAM_RULES.get(key)
    if rule is None:
        return f"KEY must be one of {', '.join(sorted(PARAM_RULES))}"
    low, high, what = rule
    text = value.strip()
    if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
        return f"{key} must be {what}"
    return None


@dataclass(frozen=True, slots=True)
class MessageOptions:
    """What every message of a campaign shares, besides its text."""

    sender: str | None = None  # <from>
    flash: bool = False  # msg_type SMS_FLASH
    unicode: bool | None = None  # None: decide per text; True/False: force
    udh: str | None = None  # hex user data header (binary messages)
    binary: bool = False  # the text is a hex payload
    callback: int | None = None  # msg_callback level 0-7
    params: tuple[tuple[str, str], ...] = ()  # other sendmsg elements, validated names
    max_parts: int = DEFAULT_MAX_PARTS  # longer texts are rejected at staging
    #: replace typographic quotes, dashes, ellipses and spaces by GSM ones when that makes a
    #: text GSM (sms.smarten); part of the campaign's fingerprint only when on
    smart_encoding: bool = False


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where and as whom to send."""

    url: str = DEFAULT_GATEWAY_URL
    api_id: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    connect_timeout: float = 10.0  # seconds
    read_timeout: float = 60.0  # seconds; past it the outcome of a request is unknown


#: seconds a run keeps retrying a results database that fails mid-run (``--db-retry``)
DEFAULT_DB_RETRY = 120.0


@dataclass(frozen=True, slots=True)
class RunSettings:
    """One `batch-sender run`."""

    name: str
    text: str | None = None  # template with {column} placeholders; None: the `text` column
    country: str | None = None  # default region for national-format numbers
    strict_numbers: bool = False
    country_column: str | None = None  # a column with each row's region code (--country: default)
    message: MessageOptions = MessageOptions()
    chunk_size: int = DEFAULT_CHUNK_SIZE
    concurrency: int | str = DEFAULT_CONCURRENCY  # 1-MAX_CONCURRENCY or AUTO_CONCURRENCY
    rate: float | None = None  # message parts per second, account-wide; None: unlimited
    max_wait: float = DEFAULT_MAX_WAIT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    resend_unknown: bool = False
    allow_partial: bool = False  # start even when the balance is short of the estimated cost
    backoff_scale: float = 1.0  # multiplies every retry wait (env BATCH_SENDER_BACKOFF_SCALE)
    send_process: str = "auto"  # one of SEND_PROCESS_MODES
    #: refuse to stage or send when more than this percentage of the rows is unusable (rejected)
    max_rejected: float | None = None
    #: seconds to keep retrying a results database that fails mid-run (its outcomes held and
    #: journaled) before the run stops, resumable
    db_retry: float = DEFAULT_DB_RETRY
