"""The delivery-receipt receiver: an HTTP server recording Clickatell's status callbacks.

Accepts a callback on any path as a GET query, a POST form, the JSON ``data`` field variant
(``data={"callback": {...}}``) or a raw JSON POST, with the parameters ``api_id, apiMsgId,
cliMsgId, to, timestamp, from, status, charge`` (clickatell-api.md §6.3; names matched without
regard to case). Answers:

* ``200`` once the status is committed, also for a repeat (the gateway retries until it gets a
  2xx) and for a message ID no recipient has (logged: retrying cannot make it known);
* ``400`` for a request that is not a callback (no message ID, no numeric status, a body over
  ``MAX_BODY`` bytes, undecodable) and ``411`` for a POST without ``Content-Length``, before
  the database is touched;
* ``401``/``403`` when a token or basic-auth password is configured and missing/wrong;
* ``503`` when the database cannot be written, so that the gateway tries again later.

The standard library's threading server parses requests (one thread per connection); one writer
thread records them (:class:`GroupCommit`): whatever arrived while the previous transaction ran
is committed together, and each request is answered once its own report is committed. Bursts of
callbacks then cost one transaction per batch instead of one per request, and SQLite sees a
single writer instead of many threads queueing for its lock.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl

from batch_sender.errors import StoreError
from batch_sender.gateway import delivery_codes as statuses
from batch_sender.store.delivery import Applied, DeliveryReport, DeliveryStore

__all__ = [
    "MAX_BODY",
    "BadCallback",
    "CallbackAuth",
    "CallbackServer",
    "GroupCommit",
    "ReceiverStats",
    "parse_callback",
]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes; a callback is a few hundred
MAX_FIELDS = 100  # form/query fields per request
IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may sit idle
TOKEN_HEADER = "X-Callback-Token"
MAX_CHARGE = 1e6  # credits; larger values are not charges
MAX_BATCH = 500  # reports committed in one transaction at most
_REALM = 'Basic realm="batch-sender callbacks"'


class _Headers(Protocol):
    """What a request's headers offer: ``get`` (an ``email.message.Message`` or a dict)."""

    def get(self, name: str, /) -> str | None: ...


class BadCallback(ValueError):
    """The request is not a usable status callback (answered 400)."""


def parse_callback(query: str, body: bytes, content_type: str = "") -> DeliveryReport:
    """The delivery report a callback request carries; :class:`BadCallback` if none."""
    params = _params(query, body, content_type)
    status = statuses.normalise(params.get("status", ""))
    if status is None:
        raise BadCallback("status missing or not a numeric status code")
    api_id = params.get("apimsgid", "").strip() or None
    cli_id = params.get("climsgid", "").strip() or None
    if api_id is None and cli_id is None:
        raise BadCallback("apiMsgId and cliMsgId are both missing")
    to = params.get("to", "").strip().lstrip("+") or None
    return DeliveryReport(
        status=status,
        api_message_id=api_id,
        client_message_id=cli_id,
        to=to,
        status_at=_timestamp(params.get("timestamp", "")),
        charge=_charge(params.get("charge", "")),
        source="callback",
    )


def parse_mo(query: str, body: bytes, content_type: str = "") -> tuple[str, str] | None:
    """``(from, text)`` of an inbound-message (MO) callback, or None for anything else.

    Clickatell posts replies to the same kind of URL with ``moMsgId, from, to, timestamp, text``
    (clickatell-api.md §6.3); a STOP reply is how recipients opt out.
    """
    try:
        params = _params(query, body, content_type)
    except BadCallback:
        return None
    if not params.get("momsgid"):
        return None
    sender = params.get("from", "").strip()
    if not sender:
        raise BadCallback("an MO callback without 'from'")
    return sender, params.get("text", "")


def _params(query: str, body: bytes, content_type: str) -> dict[str, str]:
    """Query and body fields (body wins), keys lower-cased; the JSON variants unpacked."""
    try:
        text = body.decode("utf-8")
        fields = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_FIELDS)
        stripped = text.lstrip()
        if "json" in content_type.lower() or stripped.startswith("{"):
            fields += _json_fields(stripped)
        elif text:
            fields += parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadCallback(f"undecodable request: {exc}") from exc
    params = {key.lower(): value for key, value in fields}
    if "data" in params and "status" not in params:  # data={"callback": {...}}
        params.update(dict(_json_fields(params.pop("data"))))
    return params


def _json_fields(text: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(text) if text else {}
    except ValueError as exc:
        raise BadCallback(f"invalid JSON: {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("callback"), dict):
        doc = doc["callback"]
    if not isinstance(doc, dict):
        raise BadCallback("JSON callback is not an object")
    return [
        (str(k).lower(), str(v))
        for k, v in doc.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    ]


def _timestamp(value: str) -> datetime | None:
    """UNIX seconds (as documented), or ``YYYY-MM-DD HH:MM:SS`` UTC; None when unusable."""
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        log.debug("ignoring unusable callback timestamp %r", value[:40])
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _charge(value: str) -> float | None:
    try:
        charge = float(value)
    except ValueError:
        return None
    return charge if math.isfinite(charge) and 0 <= charge < MAX_CHARGE else None


@dataclass(frozen=True)
class CallbackAuth:
    """Optional protection: a shared-secret token and/or HTTP basic credentials.

    With neither set every request is accepted. Either one configured is enough to pass.
    """

    token: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.token) or self.user is not None

    def check(self, headers: _Headers, query: str) -> int | None:
        """None when the request may pass, else the HTTP status to refuse it with (401/403)."""
        if not self.enabled:
            return None
        offered = False
        if self.token:
            given = _offered_token(headers, query)
            if given is not None:
                offered = True
                if hmac.compare_digest(given.encode(), self.token.encode()):
                    return None
        if self.user is not None:
            basic = _basic(headers.get("Authorization") or "")
            if basic is not None:
                offered = True
                user, password = basic
                if hmac.compare_digest(user.encode(), self.user.encode()) & hmac.compare_digest(
                    password.encode(), (self.password or "").encode()
                ):
                    return None
        return 403 if offered else 401


def _offered_token(headers: _Headers, query: str) -> str | None:
    header = headers.get(TOKEN_HEADER)
    if header is not None:
        return header.strip()
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    try:
        for key, value in parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_FIELDS):
            if key == "token":
                return value
    except ValueError:
        return None
    return None


def _basic(header: str) -> tuple[str, str] | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")  # offered, but unreadable: a wrong password
    user, _, password = decoded.partition(":")
    return user, password


@dataclass
class ReceiverStats:
    """What the receiver answered so far (thread-safe counters)."""

    updated: int = 0
    recorded: int = 0  # history only (late, out of order)
    duplicates: int = 0
    unknown: int = 0
    bad: int = 0  # 400/411
    refused: int = 0  # 401/403
    errors: int = 0  # 503
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class _Pending:
    __slots__ = ("applied", "done", "error", "report")

    def __init__(self, report: DeliveryReport) -> None:
        self.report = report
        self.done = threading.Event()
        self.applied: Applied | None = None
        self.error: StoreError | None = None


class GroupCommit:
    """One writer thread recording reports in batches; callers block until theirs is committed."""

    def __init__(self, deliveries: DeliveryStore, *, max_batch: int = MAX_BATCH) -> None:
        self._deliveries = deliveries
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="callback-writer", daemon=True)
        self._closed = False
        self._thread.start()
        self.transactions = 0

    def record(self, report: DeliveryReport) -> Applied:
        """Record ``report``; returns once it is committed. :class:`StoreError` if it was not."""
        if self._closed:
            raise StoreError("the receiver is shutting down")
        pending = _Pending(report)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.applied is not None
        return pending.applied

    def close(self) -> None:
        """Finish what is queued, then stop the writer (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            applied = self._deliveries.record([p.report for p in batch])
        except StoreError as exc:
            for p in batch:
                p.error = exc
        except Exception as exc:  # never leave a request waiting forever
            log.exception("recording delivery statuses failed")
            for p in batch:
                p.error = StoreError(f"recording delivery statuses failed: {exc}")
        else:
            self.transactions += 1
            for p, result in zip(batch, applied, strict=True):
                p.applied = result
        for p in batch:
            p.done.set()


_APPLIED_COUNTER = {
    Applied.UPDATED: "updated",
    Applied.RECORDED: "recorded",
    Applied.DUPLICATE: "duplicates",
    Applied.UNKNOWN: "unknown",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # a request line we cannot read is answered with a status line (HTTP/0.9 would get none)
    default_request_version = "HTTP/1.0"
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"
    server_version = "batch-sender-callbacks"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT
    server: CallbackServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._handle(b"")

    def do_POST(self) -> None:  # noqa: N802
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            self._refuse(411, "send a Content-Length")
            return
        try:
            size = int(length)
        except ValueError:
            self._refuse(400, "bad Content-Length")
            return
        if size < 0 or size > self.server.max_body:
            self._refuse(400, f"body larger than {self.server.max_body} bytes")
            return
        self._handle(self.rfile.read(size))

    def do_PUT(self) -> None:  # noqa: N802
        self._refuse(405, "use GET or POST", keep_open=False)

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _handle(self, body: bytes) -> None:
        _, _, query = self.path.partition("?")
        stats = self.server.stats
        denied = self.server.auth.check(self.headers, query)
        if denied is not None:
            stats.count("refused")
            extra = {"WWW-Authenticate": _REALM} if denied == 401 else {}
            self._reply(denied, "unauthorized" if denied == 401 else "forbidden", extra)
            return
        content_type = self.headers.get("Content-Type", "")
        try:
            mo = parse_mo(query, body, content_type)
            if mo is not None:
                self._inbound(*mo)
                return
            report = parse_callback(query, body, content_type)
        except BadCallback as exc:
            stats.count("bad")
            log.info("bad callback from %s: %s", self.client_address[0], exc)
            self._reply(400, str(exc))
            return
        try:
            applied = self.server.writer.record(report)
        except StoreError as exc:
            stats.count("errors")
            log.error("could not record a delivery status: %s", exc)
            self._reply(503, "cannot record now, try again later")
            return
        stats.count(_APPLIED_COUNTER[applied])
        self._reply(200, applied.value)

    def _inbound(self, sender: str, text: str) -> None:
        """An inbound reply: a stop keyword puts its sender on the suppression list."""
        on_mo = self.server.on_mo
        try:
            stopped = on_mo is not None and on_mo(sender, text)
        except StoreError as exc:
            self.server.stats.count("errors")
            log.error("could not record a stop reply: %s", exc)
            self._reply(503, "cannot record now, try again later")
            return
        self._reply(200, "stop recorded" if stopped else "mo ignored")

    def _refuse(self, status: int, message: str, *, keep_open: bool = False) -> None:
        """Answer without reading the body, and close: the rest of the stream is unread."""
        self.server.stats.count("bad")
        self.close_connection = not keep_open
        self._reply(status, message, {"Connection": "close"})

    def _reply(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        data = (message + "\n").encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Access log at debug level, without the query string (it may carry the token)."""
        log.debug("%s %s %s", self.client_address[0], self.command, self._logged_path())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s -> %s", self.command, self._logged_path(), code)

    def _logged_path(self) -> str:
        """The path without its query; empty before a request line was read (a malformed or
        over-long one is answered 400/414 before ``path`` exists)."""
        path: str = getattr(self, "path", "")
        return path.partition("?")[0][:200]


class CallbackServer(ThreadingHTTPServer):
    """The receiver: ``serve_forever()`` in the foreground, or ``start()``/``stop()`` in tests."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen backlog; the default 5 drops bursts of new connections

    def __init__(
        self,
        deliveries: DeliveryStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: CallbackAuth | None = None,
        max_body: int = MAX_BODY,
        on_mo: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.deliveries = deliveries
        #: called with (from, text) for inbound replies; True when it was a stop request
        self.on_mo = on_mo
        self.writer = GroupCommit(deliveries)
        self.auth = auth or CallbackAuth()
        self.max_body = max_body
        self.stats = ReceiverStats()
        self._thread: threading.Thread | None = None
        try:
            super().__init__((host, port), _Handler)
        except BaseException:
            self.writer.close()
            raise

    @property
    def url(self) -> str:
        """``http://host:port/`` as bound (the real port when 0 was asked)."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> CallbackServer:
        """Serve on a background thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="callback-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (reset, broken pipe, timeout) is no error: one debug line, no
        traceback. Anything else is logged once, with its traceback, through our logger."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("client %s went away: %s", client_address[0], type(exc).__name__)
            return
        log.exception("handling a request from %s failed", client_address[0])

    def server_close(self) -> None:
        """Close the socket, then let the writer commit what it was given and stop."""
        super().server_close()
        self.writer.close()
