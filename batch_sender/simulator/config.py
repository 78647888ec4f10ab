"""The simulator's settings: one frozen object, so a test states exactly the gateway it wants."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

__all__ = ["CALLBACK_FIELDS", "ECHO_KINDS", "FAULT_KINDS", "Credentials", "SimulatorConfig"]

DEFAULT_API_ID = "123456"  # the documentation's example credentials
DEFAULT_USER = "MyUserName"
DEFAULT_PASSWORD = "MyPassword"
DEFAULT_PORT = 8099  # the `batch-sender simulator` command's port
DEFAULT_SESSION_TTL = 900.0  # seconds of inactivity before a session expires (15 minutes)
DEFAULT_CONCAT = 3  # parts allowed when the request gives no `concat`
MAX_CONCAT = 35  # the largest `concat` the gateway accepts
MAX_DESTINATIONS = 300  # `to` elements per SOAP request
MAX_DELIV_TIME = 10080  # minutes (7 days)

#: Every fault the simulator can inject, scripted (``Simulator.inject``) or by rate.
FAULT_KINDS = frozenset(
    {
        "http_503",  # HTTP 503, optional Retry-After (kw: retry_after)
        "http_429",  # HTTP 429 Too Many Requests, optional Retry-After (kw: retry_after)
        "http_500",  # HTTP 500 with a non-SOAP body
        "drop_before",  # close the connection without answering; nothing accepted
        "drop_after",  # accept and record the messages, then close without answering
        "err_901",  # ERR: 901, nothing accepted
        "slow",  # accept, then answer after `seconds` (kw: seconds)
        "slow_accept",  # hold the request `seconds` (querymsg: 104), then accept and answer
        "expire_sessions",  # every session expires now, before the request is handled
        "throttle",  # ERR 130 for every sendmsg until now + `seconds` (kw: seconds)
        "soap_fault",  # a SOAP-ENV:Server fault, HTTP 500; nothing accepted
        # Faults after acceptance, and answers that do not match the request (exactly-once tests):
        "http_502_after",  # accept and record the messages, then a proxy's HTTP 502 page
        "http_504_after",  # accept and record the messages, then a proxy's HTTP 504 page
        "short_error",  # nothing accepted; one `ERR: <code> To: <first>` only (kw: code)
        "short_accept",  # accept every number, answer only the first number's `<return>`
        "twice_first",  # accept every number, answer the first number's `<return>` for each
        "bad_ids",  # accept every number, answer malformed IDs (kw: id, default "42")
    }
)

#: The parameters of a status callback (clickatell-api.md §6.3).
CALLBACK_FIELDS = frozenset(
    {"api_id", "apiMsgId", "cliMsgId", "to", "timestamp", "from", "status", "charge"}
)

#: Secrets a careless gateway echoes back (``echo_secrets``): the session ID in every sendmsg
#: error description (per number and request-level), ``user/password`` in ERR 001.
ECHO_KINDS = frozenset({"session", "password"})


class Credentials(NamedTuple):
    """The one account the simulator accepts."""

    api_id: str
    user: str
    password: str


def _env(name: str, default: str) -> str:
    """An environment variable, or the documentation's example value when unset or empty."""
    return os.environ.get(name) or default


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig:
    """Everything that shapes the simulated gateway; times in seconds unless named otherwise."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    api_id: str = field(default_factory=lambda: _env("CLICKATELL_API_ID", DEFAULT_API_ID))
    user: str = field(default_factory=lambda: _env("CLICKATELL_USER", DEFAULT_USER))
    password: str = field(default_factory=lambda: _env("CLICKATELL_PASSWORD", DEFAULT_PASSWORD))
    latency_ms: float = 0.0  # added before every answer
    record: Path | None = None  # JSON-lines file, one line per accepted message
    keep_messages: bool = True  # keep accepted messages in memory (querymsg, `accepted`)
    credits: float = 1e9
    rates: Mapping[str, float] = field(default_factory=dict)  # number prefix → credits per part
    default_rate: float = 1.0  # credits per part when no prefix of `rates` matches
    balance_label: str = "Credit"  # getbalance answers "Credit: x" (or "Credits")
    max_mps: float | None = None  # messages per throttle window before ERR 130; None = no cap
    throttle_window: float = 1.0  # seconds; ERR 130 names the end of the current window
    session_ttl: float = DEFAULT_SESSION_TTL
    default_concat: int = DEFAULT_CONCAT
    max_destinations: int = MAX_DESTINATIONS
    allowed_senders: frozenset[str] | None = None  # None: any well-formed `from`; else ERR 123
    number_errors: Mapping[str, str] = field(default_factory=dict)  # number or prefix → code
    unroutable_prefixes: tuple[str, ...] = ()  # ERR 114 per destination
    #: The reference page repeats a request-level error once per destination (with ``To:``)
    #: when a request has several; False answers a single ``<return>`` without ``To:``.
    request_errors_per_destination: bool = True
    ping_echoes_session: bool = True  # "OK: <session>" (True) or "OK:" (False)
    # Delivery simulation: 008 on acceptance, 003 after the first delay, final after the second.
    delivery_delays: tuple[float, float] = (0.5, 1.0)
    undeliverable_prefixes: tuple[str, ...] = ()  # final status 007 instead of 004
    callback_url: str | None = None  # where msg_callback statuses are POSTed
    callback_retry_delays: tuple[float, ...] = (0.05, 0.2, 0.5)  # waits between failed posts
    #: fields left out of every callback (of CALLBACK_FIELDS): e.g. {"cliMsgId"} for an account
    #: whose callbacks carry only the apiMsgId, {"cliMsgId", "to"} for only the ID and status
    callback_omit: frozenset[str] = frozenset()
    # Random faults: kind → probability per sendmsg request, drawn from Random(seed).
    fault_rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    retry_after: float | None = 1.0  # Retry-After of random http_503 and http_429 faults
    slow_seconds: float = 5.0  # delay of random `slow` faults
    throttle_seconds: float = 1.0  # duration of random `throttle` faults
    max_body_bytes: int = 8 * 1024 * 1024
    echo_secrets: frozenset[str] = frozenset()  # of ECHO_KINDS

    def __post_init__(self) -> None:
        unknown = set(self.fault_rates) - FAULT_KINDS
        if unknown:
            raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
        unknown = set(self.callback_omit) - (CALLBACK_FIELDS - {"apiMsgId", "status"})
        if unknown:
            raise ValueError(f"cannot omit from callbacks: {', '.join(sorted(unknown))}")
        unknown = set(self.echo_secrets) - ECHO_KINDS
        if unknown:
            raise ValueError(f"unknown echo_secrets: {', '.join(sorted(unknown))}")

    @property
    def credentials(self) -> Credentials:
        """The account the simulator accepts."""
        return Credentials(self.api_id, self.user, self.password)
