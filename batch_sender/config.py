"""Settings for a run, built once by the CLI (options and environment) and passed down frozen.

Only the CLI reads the environment; library code receives these objects. Tunables are named
constants with their units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DB_URL",
    "DEFAULT_GATEWAY_URL",
    "DEFAULT_MAX_WAIT",
    "MAX_CHUNK_SIZE",
    "PARAM_NAMES",
    "PARAM_RULES",
    "SEND_PROCESS_MIN_ROWS",
    "SEND_PROCESS_MODES",
    "GatewaySettings",
    "MessageOptions",
    "RunSettings",
    "check_param",
]

DEFAULT_DB_URL = "sqlite:///batch_sender.db"
DEFAULT_GATEWAY_URL = "https://api.clickatell.com/soap/document_literal/webservice"
DEFAULT_CHUNK_SIZE = 100  # recipients per sendmsg request
MAX_CHUNK_SIZE = 300  # the SOAP API's limit of <to> elements per request
DEFAULT_CONCURRENCY = 4  # requests in flight
DEFAULT_MAX_WAIT = 3600.0  # seconds: the longest ERR 130 pause before the run stops instead
DEFAULT_MAX_ATTEMPTS = 6  # tries of one request on retryable errors
DEFAULT_MAX_PARTS = 35  # the gateway's ceiling on message parts (concat)
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


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where and as whom to send."""

    url: str = DEFAULT_GATEWAY_URL
    api_id: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    connect_timeout: float = 10.0  # seconds
    read_timeout: float = 60.0  # seconds; past it the outcome of a request is unknown


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
    concurrency: int = DEFAULT_CONCURRENCY
    rate: float | None = None  # message parts per second, account-wide; None: unlimited
    max_wait: float = DEFAULT_MAX_WAIT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    resend_unknown: bool = False
    allow_partial: bool = False  # start even when the balance is short of the estimated cost
    backoff_scale: float = 1.0  # multiplies every retry wait (env BATCH_SENDER_BACKOFF_SCALE)
    send_process: str = "auto"  # one of SEND_PROCESS_MODES
