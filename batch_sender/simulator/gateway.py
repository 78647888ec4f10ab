"""The simulated Clickatell account: sessions, validation, credits, limits, faults and records.

Transport-free: :meth:`Gateway.handle` turns one HTTP request into one :class:`Reply`, so the
HTTP server stays a thin shell and every rule of clickatell-api.md lives here, in one place.
Everything runs on the server's event-loop thread except the few methods that take ``_lock``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from batch_sender.simulator import parts as _parts
from batch_sender.simulator import soap
from batch_sender.simulator.config import (
    FAULT_KINDS,
    MAX_CONCAT,
    MAX_DELIV_TIME,
    SimulatorConfig,
)

__all__ = ["AcceptedMessage", "Batch", "Gateway", "Reply"]

log = logging.getLogger(__name__)

WEBSERVICE_PATH: Final = "/soap/document_literal/webservice"
_XML_TYPE: Final = b"text/xml; charset=UTF-8"
_WSDL_FILE: Final = Path(__file__).with_name("clickatell.wsdl")
_ADDRESS_RE: Final = re.compile(rb'(<soap:address\s+location=")[^"]*(")')

#: Descriptions of the error codes the simulator emits (clickatell-api.md §5).
DESCRIPTIONS: Final = {
    "001": "Authentication failed",
    "003": "Session ID expired",
    "005": "Missing session ID",
    "101": "Invalid or missing parameters",
    "102": "Invalid user data header",
    "103": "Unknown API message ID",
    "104": "Unknown client message ID",
    "105": "Invalid destination address",
    "106": "Invalid source address",
    "107": "Empty message",
    "108": "Invalid or missing API ID",
    "109": "Missing message ID",
    "112": "Invalid message type",
    "113": "Maximum message parts exceeded",
    "114": "Cannot route message",
    "116": "Invalid Unicode data",
    "120": "Invalid delivery time",
    "121": "Destination mobile number blocked",
    "122": "Destination mobile opted out",
    "123": "Invalid Sender ID",
    "128": "Number delisted",
    "130": "Maximum MT limit exceeded",
    "301": "No credit left",
    "901": "Internal error - please retry",
}
COVERAGE_OK: Final = (
    "OK: This prefix is currently supported. Messages sent to this prefix will be routed. Charge: "
)
COVERAGE_ERR: Final = (
    "ERR: This prefix is not currently supported. Messages sent to this prefix will fail. "
    "Please contact support for assistance."
)
MSG_TYPES: Final = frozenset(
    {
        "SMS_TEXT",
        "SMS_FLASH",
        "SMS_NOKIA_OLOGO",
        "SMS_NOKIA_GLOGO",
        "SMS_NOKIA_PICTURE",
        "SMS_NOKIA_RINGTONE",
        "SMS_NOKIA_RTTL",
        "SMS_NOKIA_CLEAN",
        "SMS_NOKIA_VCARD",
        "SMS_NOKIA_VCAL",
    }
)
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_ALNUM_SENDER: Final = re.compile(r"[A-Za-z0-9]{1,11}")
_NUMERIC_SENDER: Final = re.compile(r"[0-9]{1,16}")


class Reply:
    """One HTTP answer, or an instruction to drop the connection, possibly after a delay."""

    __slots__ = ("body", "content_type", "delay", "drop", "headers", "later", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        content_type: bytes = _XML_TYPE,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        delay: float = 0.0,
        drop: bool = False,
        later: Callable[[], Reply] | None = None,
    ) -> None:
        """``later``: after ``delay``, call it for the real answer (the gateway acts then, even
        when the client has gone meanwhile: slow acceptance)."""
        self.later = later
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.delay = delay
        self.drop = drop


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """One message the simulated gateway accepted (and charged)."""

    api_message_id: str
    to: str
    text: str
    client_message_id: str | None
    time: float  # UNIX time of acceptance
    parts: int
    unicode: bool
    sender: str | None
    charge: float
    msg_callback: int
    msg_type: str
    udh: str | None
    data: str | None
    deliv_time: int  # minutes


class Batch:
    """The messages one sendmsg accepted: shared fields once, IDs as one hex string (compact)."""

    __slots__ = (
        "charges",
        "client_message_id",
        "data",
        "deliv_time",
        "ids",
        "msg_callback",
        "msg_type",
        "parts",
        "sender",
        "text",
        "time",
        "to",
        "udh",
        "unicode",
    )

    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    ids: str  # 32 hex characters per message, concatenated
    to: list[str]
    charges: list[float]
    text: str
    client_message_id: str | None
    time: float
    parts: int
    unicode: bool
    sender: str | None
    msg_callback: int
    msg_type: str
    udh: str | None
    data: str | None
    deliv_time: int

    def api_message_id(self, i: int) -> str:
        """The API message ID of the batch's ``i``-th message."""
        return self.ids[32 * i : 32 * i + 32]

    def messages(self) -> Iterator[AcceptedMessage]:
        """The batch's messages, one object each."""
        for i, to in enumerate(self.to):
            yield AcceptedMessage(
                self.api_message_id(i),
                to,
                self.text,
                self.client_message_id,
                self.time,
                self.parts,
                self.unicode,
                self.sender,
                self.charges[i],
                self.msg_callback,
                self.msg_type,
                self.udh,
                self.data,
                self.deliv_time,
            )


class _Reject(Exception):
    """A request-level ``ERR`` found while validating: the whole request is refused."""

    def __init__(self, code: str, description: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.description = description or DESCRIPTIONS[code]


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str
    options: dict[str, Any]


def _is_hex(value: str) -> bool:
    return all(c in _HEX for c in value)


def _format_credits(value: float) -> str:
    """123.4, 5.0, 0.33: at least one decimal, no trailing zeros beyond it."""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


class _PrefixTable:
    """Longest-prefix lookup over a few prefixes, in O(number of distinct prefix lengths)."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.lengths = sorted({len(p) for p in table}, reverse=True)

    def get(self, number: str) -> Any:
        table = self.table
        for length in self.lengths:
            hit = table.get(number[:length])
            if hit is not None:
                return hit
        return None


class Gateway:
    """The simulated account and its rules; one instance per simulator."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.url = ""  # set by the server once it listens
        self._lock = threading.Lock()
        self._credits = float(config.credits)
        self._sessions: dict[str, float] = {}  # session id → last use (UNIX time)
        self.sessions_issued: list[str] = []  # every session id handed out (tests look for it)
        self._batches: list[Batch] = []
        self._accepted_count = 0
        self.requests = 0  # sendmsg requests received
        self._by_api_id: dict[str, tuple[Batch, int]] = {}
        self._by_cli_id: dict[str, tuple[Batch, int]] = {}
        self._indexed = 0  # batches already in the two indexes
        self._cancelled: set[str] = set()
        self._scripted: deque[_Fault] = deque()
        self._random = random.Random(config.seed)
        self._fault_rates = sorted(config.fault_rates.items())
        self._throttled_until = 0.0
        self._window_start = 0.0
        self._window_count = 0
        self._number_errors = _PrefixTable(dict(config.number_errors))
        self._unroutable = _PrefixTable(dict.fromkeys(config.unroutable_prefixes, True))
        self._undeliverable = _PrefixTable(dict.fromkeys(config.undeliverable_prefixes, True))
        self._rates = _PrefixTable(dict(config.rates))
        self._api_id = config.api_id.strip()
        self._record: IO[str] | None = None
        self._wsdl = b""
        #: Called with each accepted batch (the server schedules delivery callbacks with it).
        self.on_accepted: Callable[[Batch], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Start serving at ``url``: render the WSDL for it and open the record file."""
        self.url = url
        wsdl = _WSDL_FILE.read_bytes()
        self._wsdl = _ADDRESS_RE.sub(lambda m: m[1] + url.encode() + m[2], wsdl)
        if self.config.record is not None:
            self._record = open(self.config.record, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        """Flush and close the record file."""
        if self._record is not None:
            self._record.close()
            self._record = None

    # -- thread-safe controls and views ------------------------------------------------------

    def inject(self, kind: str, times: int = 1, **options: Any) -> None:
        """Apply fault ``kind`` to the next ``times`` sendmsg requests (thread-safe)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._scripted.extend(_Fault(kind, dict(options)) for _ in range(times))

    def set_credits(self, credits: float) -> None:
        """Set the account balance (thread-safe)."""
        with self._lock:
            self._credits = float(credits)

    @property
    def credits(self) -> float:
        """The account balance."""
        return self._credits

    @property
    def accepted_count(self) -> int:
        """How many messages were accepted so far (also when ``keep_messages`` is off)."""
        return self._accepted_count

    def accepted(self) -> list[AcceptedMessage]:
        """A snapshot of every accepted message, in acceptance order (thread-safe)."""
        with self._lock:
            batches = list(self._batches)
        return [m for b in batches for m in b.messages()]

    def status_of(self, api_message_id: str, now: float | None = None) -> str | None:
        """The simulated delivery status of a message (``"004"``), None if unknown."""
        found = self._find(api_message_id, None)
        return None if found is None else self._status(*found, time.time() if now is None else now)

    # -- HTTP entry point ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: bytes) -> Reply:
        """Answer one HTTP request."""
        if path.rstrip("/") != WEBSERVICE_PATH:
            return Reply(404, b"Not Found", content_type=b"text/plain")
        if method == "GET":
            if query.lower().startswith("wsdl"):
                return self._with_latency(Reply(200, self._wsdl))
            return Reply(405, b"POST a SOAP request, or GET ?wsdl", content_type=b"text/plain")
        if method != "POST":
            return Reply(405, b"Method Not Allowed", content_type=b"text/plain")
        try:
            op = soap.parse_request(body)
        except soap.BadRequest as exc:
            return self._with_latency(Reply(500, soap.fault_body("SOAP-ENV:Client", str(exc))))
        now = time.time()
        if op.name == "sendmsg":
            reply = self._sendmsg(op, now)
        else:
            handler = self._OPERATIONS.get(op.name)
            if handler is None:
                message = f"Operation '{op.name}' is not supported"
                reply = Reply(500, soap.fault_body("SOAP-ENV:Client", message))
            else:
                reply = Reply(200, soap.response_body(op.name, [handler(self, op.fields, now)]))
        return self._with_latency(reply)

    def _with_latency(self, reply: Reply) -> Reply:
        reply.delay += self.config.latency_ms / 1000.0
        return reply

    # -- authentication --------------------------------------------------------------------------

    def _authenticate(self, fields: dict[str, str], now: float) -> None:
        """Check the session or the credentials of a call; raise :class:`_Reject` if bad."""
        session = fields.get("session_id", "").strip()
        if session:
            self._touch_session(session, now)
            return
        api_id = fields.get("api_id", "").strip()
        if not api_id and "user" not in fields and "password" not in fields:
            raise _Reject("005")
        self._check_credentials(api_id, fields)

    def _check_credentials(self, api_id: str, fields: dict[str, str]) -> None:
        if not api_id.isdigit():
            raise _Reject("108")
        cfg = self.config
        if (
            api_id.lstrip("0") != self._api_id.lstrip("0")
            or fields.get("user") != cfg.user
            or fields.get("password") != cfg.password
        ):
            if "password" in cfg.echo_secrets:  # a careless gateway: "...failed for user/pw"
                given = f"{fields.get('user', '')}/{fields.get('password', '')}"
                raise _Reject("001", f"{DESCRIPTIONS['001']} for {given}")
            raise _Reject("001")

    def _touch_session(self, session: str, now: float) -> None:
        last = self._sessions.get(session)
        if last is None or now - last > self.config.session_ttl:
            self._sessions.pop(session, None)
            raise _Reject("003")
        self._sessions[session] = now

    # -- sendmsg ---------------------------------------------------------------------------------

    def _next_fault(self) -> _Fault | None:
        if self._scripted:
            with self._lock:
                if self._scripted:
                    return self._scripted.popleft()
        if self._fault_rates:
            draw = self._random.random()
            for kind, rate in self._fault_rates:
                if draw < rate:
                    return _Fault(kind, {})
                draw -= rate
        return None

    def _sendmsg(self, op: soap.Operation, now: float) -> Reply:
        self.requests += 1
        fault = self._next_fault()
        delay, drop = 0.0, False
        if fault is not None:
            kind, opts = fault.kind, fault.options
            if kind == "drop_before":
                return Reply(drop=True)
            if kind in ("http_503", "http_429"):
                retry_after = opts.get("retry_after", self.config.retry_after)
                headers = () if retry_after is None else ((b"Retry-After", b"%g" % retry_after),)
                status, text = (
                    (503, b"Service Unavailable")
                    if kind == "http_503"
                    else (
                        429,
                        b"Too Many Requests",
                    )
                )
                return Reply(status, text, content_type=b"text/plain", headers=headers)
            if kind == "http_500":
                return Reply(
                    500,
                    b"<html><body>Internal Server Error</body></html>",
                    content_type=b"text/html",
                )
            if kind == "soap_fault":
                return Reply(500, soap.fault_body("SOAP-ENV:Server", "Internal server error"))
            if kind == "err_901":
                return self._reply_error("sendmsg", op.to, _Reject("901"))
            if kind == "expire_sessions":
                self._sessions.clear()
            elif kind == "throttle":
                seconds = opts.get("seconds", self.config.throttle_seconds)
                self._throttled_until = max(self._throttled_until, now + seconds)
            elif kind == "slow":
                delay = float(opts.get("seconds", self.config.slow_seconds))
            elif kind == "slow_accept":
                # the request sits in the gateway for `seconds` before it is accepted: a
                # querymsg meanwhile answers 104, although the messages will go out
                hold = float(opts.get("seconds", self.config.slow_seconds))
                return Reply(delay=hold, later=lambda: self._sendmsg_answer(op, time.time(), None))
            elif kind == "drop_after":
                drop = True
            elif kind == "short_error":
                code = str(opts.get("code", "901"))
                err = f"ERR: {code}, {DESCRIPTIONS.get(code, 'Error')}"
                first = f" To: {soap.xml_text(op.to[0])}" if op.to and len(op.to) > 1 else ""
                return Reply(200, soap.response_body("sendmsg", [err + first]))
        reply = self._sendmsg_answer(op, now, fault)
        reply.delay, reply.drop = delay, drop
        return reply

    def _sendmsg_answer(self, op: soap.Operation, now: float, fault: _Fault | None) -> Reply:
        """Accept what can be accepted and answer it (or what ``fault`` makes of the answer)."""
        try:
            returns = self._accept(op, now)
        except _Reject as reject:
            if reject.code != "001" and "session" in self.config.echo_secrets:
                reject.description += _session_echo(op.fields)
            reply = self._reply_error("sendmsg", op.to, reject)
        else:
            if "session" in self.config.echo_secrets:
                returns = [_echo_session(r, op.fields) for r in returns]
            reply = Reply(200, soap.response_body("sendmsg", returns))
            if fault is not None:
                reply = self._after_acceptance(fault, returns) or reply
        return reply

    @staticmethod
    def _after_acceptance(fault: _Fault, returns: list[str]) -> Reply | None:
        """The answer a fault puts in place of the real one once the messages were accepted."""
        kind = fault.kind
        if kind in ("http_502_after", "http_504_after"):
            status = 502 if kind == "http_502_after" else 504
            page = b"<html><body><h1>%d</h1>upstream gateway error</body></html>" % status
            return Reply(status, page, content_type=b"text/html")
        if kind == "short_accept":
            return Reply(200, soap.response_body("sendmsg", returns[:1]))
        if kind == "twice_first":  # the first number answered as often as there are numbers
            return Reply(200, soap.response_body("sendmsg", returns[:1] * len(returns)))
        if kind == "bad_ids":
            bad = str(fault.options.get("id", "42"))
            mangled = [re.sub(r"^ID: [0-9a-fA-F]+", f"ID: {bad}", r) for r in returns]
            return Reply(200, soap.response_body("sendmsg", mangled))
        return None

    def _reply_error(self, operation: str, to: list[str], reject: _Reject) -> Reply:
        """A request-level error: once, or once per destination with ``To:`` (reference page)."""
        err = f"ERR: {reject.code}, {soap.xml_text(reject.description)}"
        if len(to) > 1 and self.config.request_errors_per_destination:
            returns = [f"{err} To: {soap.xml_text(n)}" for n in to]
        else:
            returns = [err]
        return Reply(200, soap.response_body(operation, returns))

    def _accept(self, op: soap.Operation, now: float) -> list[str]:
        """Validate, charge and record one sendmsg; its ``<return>`` strings (escaped)."""
        f = op.fields
        self._authenticate(f, now)
        cfg = self.config
        tos = op.to
        if not tos or len(tos) > cfg.max_destinations:
            raise _Reject("101")
        unicode = _flag(f, "unicode")
        concat = _int(f, "concat", cfg.default_concat)
        if not 1 <= concat <= MAX_CONCAT:
            raise _Reject("101")
        msg_callback = _int(f, "msg_callback", 0)
        if not 0 <= msg_callback <= 7:
            raise _Reject("101")
        deliv_time = _int(f, "deliv_time", 0)
        if not 0 <= deliv_time <= MAX_DELIV_TIME:
            raise _Reject("120")
        for name in ("deliv_ack", "max_credits", "req_feat", "queue", "escalate", "mo", "validity"):
            if name in f:
                _number(f, name)
        msg_type = f.get("msg_type", "").strip() or "SMS_TEXT"
        if msg_type not in MSG_TYPES:
            raise _Reject("112")
        text = f.get("text", "")
        data = f.get("data", "").strip() or None
        udh = f.get("udh", "").strip() or None
        if udh is not None and (len(udh) % 2 or not _is_hex(udh)):
            raise _Reject("102")
        if data is not None:
            if len(data) % 2 or not _is_hex(data):
                raise _Reject("101")
            parts = _parts.binary_parts(udh or "", data)
        elif not text:
            raise _Reject("107")
        elif unicode:
            if len(text) % 4 or not _is_hex(text):
                raise _Reject("116")
            parts = _parts.text_parts(text, True)
        elif udh is not None and _is_hex(text) and not len(text) % 2:
            parts = _parts.binary_parts(udh, text)  # the reference's binary example
        else:
            parts = _parts.text_parts(text, False)
        if parts > concat:
            raise _Reject("113")
        sender = f.get("from", "").strip() or None
        if sender is not None:
            if not (_NUMERIC_SENDER.fullmatch(sender) or _ALNUM_SENDER.fullmatch(sender)):
                raise _Reject("106")
            if cfg.allowed_senders is not None and sender not in cfg.allowed_senders:
                raise _Reject("123")
        cli_id = f.get("climsgid", "").strip() or None
        if cli_id is not None and (len(cli_id) > 32 or not cli_id.isprintable() or " " in cli_id):
            raise _Reject("101")

        # Per destination: 105 for a malformed number, then configured errors and routing.
        errors: list[str | None] = []
        valid: list[str] = []
        number_errors = self._number_errors if self._number_errors.table else None
        unroutable = self._unroutable if self._unroutable.table else None
        for to in tos:
            if not (7 <= len(to) <= 15 and to.isdigit() and to.isascii() and to[0] != "0"):
                errors.append("105")
                continue
            code = number_errors.get(to) if number_errors is not None else None
            if code is None and unroutable is not None and unroutable.get(to):
                code = "114"
            errors.append(code)
            if code is None:
                valid.append(to)

        with self._lock:
            self._check_throttle(len(valid), now)
            accepted, charges = self._charge(valid, parts)
            if not accepted and valid:
                raise _Reject("301")
            ids = os.urandom(16 * len(accepted)).hex()
            batch = Batch(
                ids=ids,
                to=accepted,
                charges=charges,
                text=text,
                client_message_id=cli_id,
                time=now,
                parts=parts,
                unicode=unicode,
                sender=sender,
                msg_callback=msg_callback,
                msg_type=msg_type,
                udh=udh,
                data=data,
                deliv_time=deliv_time,
            )
            if accepted:
                self._accepted_count += len(accepted)
                if cfg.keep_messages:
                    self._batches.append(batch)
        if accepted:
            self._write_record(batch)
            if msg_callback and self.on_accepted is not None:
                self.on_accepted(batch)
        return self._returns(tos, errors, ids, len(accepted))

    def _check_throttle(self, count: int, now: float) -> None:
        """ERR 130 when a fault throttles us or the window's message cap would be passed."""
        if now < self._throttled_until:
            raise _Reject("130", f"{DESCRIPTIONS['130']} until {int(self._throttled_until) + 1}")
        cap = self.config.max_mps
        if cap is None or not count:
            return
        window = self.config.throttle_window
        start = now - now % window
        if start != self._window_start:
            self._window_start, self._window_count = start, 0
        if self._window_count and self._window_count + count > cap * window:
            until = int(-(-(start + window) // 1))
            raise _Reject("130", f"{DESCRIPTIONS['130']} until {until}")
        self._window_count += count

    def _charge(self, valid: list[str], parts: int) -> tuple[list[str], list[float]]:
        """Charge destinations in order until credit runs out; the accepted ones, their charges."""
        rates = self._rates if self._rates.table else None
        default = self.config.default_rate * parts
        balance = self._credits
        if rates is None and balance >= default * len(valid):
            self._credits = balance - default * len(valid)
            return valid, [default] * len(valid)
        accepted: list[str] = []
        charges: list[float] = []
        for to in valid:
            rate = rates.get(to) if rates is not None else None
            charge = default if rate is None else rate * parts
            if balance < charge:
                break
            balance -= charge
            accepted.append(to)
            charges.append(charge)
        self._credits = balance
        return accepted, charges

    def _returns(self, tos: list[str], errors: list[str | None], ids: str, n_ids: int) -> list[str]:
        """One ``<return>`` per destination: ID, its own error, or 301 once credit ran out."""
        if len(tos) == 1:
            code = errors[0]
            if code is None:
                return [f"ID: {ids}" if n_ids else "ERR: 301, No credit left"]
            return [f"ERR: {code}, {DESCRIPTIONS.get(code, 'Error')}"]
        out: list[str] = []
        i = 0
        for to, code in zip(tos, errors, strict=True):
            if code is None:
                if i < n_ids:
                    out.append(f"ID: {ids[32 * i : 32 * i + 32]} To: {to}")
                    i += 1
                else:
                    out.append(f"ERR: 301, No credit left To: {to}")
            else:
                shown = to if code != "105" else soap.xml_text(to)
                out.append(f"ERR: {code}, {DESCRIPTIONS.get(code, 'Error')} To: {shown}")
        return out

    def _write_record(self, batch: Batch) -> None:
        """Append one JSON line per accepted message and flush, before the answer leaves."""
        if self._record is None:
            return
        common = (
            f',"text":{json.dumps(batch.text)}'
            f',"client_message_id":{json.dumps(batch.client_message_id)}'
            f',"time":{batch.time!r},"parts":{batch.parts}'
            f',"unicode":{"true" if batch.unicode else "false"}'
            f',"from":{json.dumps(batch.sender)},"msg_type":"{batch.msg_type}"'
            f',"msg_callback":{batch.msg_callback}}}\n'
        )
        ids = batch.ids
        lines = [
            f'{{"api_message_id":"{ids[32 * i : 32 * i + 32]}","to":"{to}",'
            f'"charge":{charge!r}{common}'
            for i, (to, charge) in enumerate(zip(batch.to, batch.charges, strict=True))
        ]
        self._record.write("".join(lines))
        self._record.flush()

    # -- other operations ------------------------------------------------------------------------

    def _op_auth(self, f: dict[str, str], now: float) -> str:
        try:
            self._check_credentials(f.get("api_id", "").strip(), f)
        except _Reject as reject:
            return f"ERR: {reject.code}, {soap.xml_text(reject.description)}"
        session = os.urandom(16).hex()
        self._sessions[session] = now
        self.sessions_issued.append(session)
        return f"OK: {session}"

    def _op_ping(self, f: dict[str, str], now: float) -> str:
        session = f.get("session_id", "").strip()
        try:
            if not session:
                raise _Reject("005")
            self._touch_session(session, now)
        except _Reject as reject:
            return f"ERR: {reject.code}, {reject.description}"
        return f"OK: {session}" if self.config.ping_echoes_session else "OK:"

    def _op_getbalance(self, f: dict[str, str], now: float) -> str:
        return _guarded(
            self, f, now, lambda: f"{self.config.balance_label}: {_format_credits(self._credits)}"
        )

    def _op_routecoverage(self, f: dict[str, str], now: float) -> str:
        def answer() -> str:
            msisdn = f.get("msisdn", "").strip()
            if not msisdn:
                raise _Reject("101")
            if not (msisdn.isdigit() and msisdn.isascii() and msisdn[0] != "0"):
                return COVERAGE_ERR
            if self._unroutable.table and self._unroutable.get(msisdn):
                return COVERAGE_ERR
            rate = self._rates.get(msisdn) if self._rates.table else None
            return f"{COVERAGE_OK}{self.config.default_rate if rate is None else rate:g}"

        return _guarded(self, f, now, answer)

    def _op_querymsg(self, f: dict[str, str], now: float) -> str:
        def answer() -> str:
            batch, i = self._lookup(f)
            return f"ID: {batch.api_message_id(i)} Status: {self._status(batch, i, now)}"

        return _guarded(self, f, now, answer)

    def _op_delmsg(self, f: dict[str, str], now: float) -> str:
        def answer() -> str:
            batch, i = self._lookup(f)
            msg_id = batch.api_message_id(i)
            if self._status(batch, i, now) == "011":  # only queued messages can be stopped
                self._cancelled.add(msg_id)
            return f"ID: {msg_id} Status: {self._status(batch, i, now)}"

        return _guarded(self, f, now, answer)

    def _op_getmsgcharge(self, f: dict[str, str], now: float) -> str:
        def answer() -> str:
            batch, i = self._lookup(f)
            charge = _format_credits(batch.charges[i])
            status = self._status(batch, i, now)
            return f"ID: {batch.api_message_id(i)} Charge: {charge} Status: {status}"

        return _guarded(self, f, now, answer)

    _OPERATIONS: Final[dict[str, Callable[[Gateway, dict[str, str], float], str]]] = {
        "auth": _op_auth,
        "ping": _op_ping,
        "getbalance": _op_getbalance,
        "routecoverage": _op_routecoverage,
        "querymsg": _op_querymsg,
        "delmsg": _op_delmsg,
        "getmsgcharge": _op_getmsgcharge,
    }

    # -- message lookup and delivery status ------------------------------------------------------

    def _lookup(self, f: dict[str, str]) -> tuple[Batch, int]:
        """The message named by ``apimsgid`` or else ``climsgid``; 103/104/109 otherwise.

        A ``climsgid`` shared by several messages (one multi-``to`` request) finds the first.
        """
        api_id = f.get("apimsgid", "").strip() or None
        cli_id = f.get("climsgid", "").strip() or None
        if api_id is None and cli_id is None:
            raise _Reject("109")
        found = self._find(api_id, cli_id)
        if found is None:
            raise _Reject("103" if api_id is not None else "104")
        return found

    def _find(self, api_id: str | None, cli_id: str | None) -> tuple[Batch, int] | None:
        with self._lock:
            new = self._batches[self._indexed :]
            self._indexed = len(self._batches)
        for batch in new:
            for i in range(len(batch.to)):
                self._by_api_id[batch.api_message_id(i)] = (batch, i)
            if batch.client_message_id is not None:
                self._by_cli_id.setdefault(batch.client_message_id, (batch, 0))
        if api_id is not None:
            return self._by_api_id.get(api_id)
        return self._by_cli_id.get(cli_id) if cli_id is not None else None

    def final_status(self, to: str) -> str:
        """004 (received), or 007 for numbers configured as undeliverable."""
        undeliverable = self._undeliverable
        return "007" if undeliverable.table and undeliverable.get(to) else "004"

    def _status(self, batch: Batch, i: int, now: float) -> str:
        """008 accepted → (011 queued while deliv_time runs) → 003 → 004/007, by elapsed time."""
        if self._cancelled and batch.api_message_id(i) in self._cancelled:
            return "006"
        start = batch.time + batch.deliv_time * 60.0
        if now < start:
            return "011"
        first, final = self.config.delivery_delays
        elapsed = now - start
        if elapsed < first:
            return "008"
        if elapsed < final:
            return "003"
        return self.final_status(batch.to[i])


def _session_echo(fields: dict[str, str]) -> str:
    """What a careless gateway appends to an error: the session ID it was sent."""
    session = fields.get("session_id", "").strip()
    return f" (session {session})" if session else ""


def _echo_session(line: str, fields: dict[str, str]) -> str:
    """``line`` with the session ID echoed into its error description, before any ``To:``."""
    if not line.startswith("ERR:"):
        return line
    head, to, number = line.partition(" To: ")
    return f"{head}{_session_echo(fields)}{to}{number}"


def _guarded(gateway: Gateway, f: dict[str, str], now: float, answer: Callable[[], str]) -> str:
    """Authenticate, then answer; any :class:`_Reject` becomes its ``ERR`` string."""
    try:
        gateway._authenticate(f, now)
        return answer()
    except _Reject as reject:
        return f"ERR: {reject.code}, {soap.xml_text(reject.description)}"


def _number(f: dict[str, str], name: str) -> float:
    try:
        return float(f[name].strip())
    except ValueError:
        raise _Reject("101") from None


def _int(f: dict[str, str], name: str, default: int) -> int:
    value = f.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise _Reject("120" if name == "deliv_time" else "101") from None


def _flag(f: dict[str, str], name: str) -> bool:
    value = _int(f, name, 0)
    if value not in (0, 1):
        raise _Reject("101")
    return value == 1
