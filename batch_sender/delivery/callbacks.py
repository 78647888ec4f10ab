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

* ``202`` once a receipt that matches no recipient yet is committed to the inbox (its apiMsgId
  is recorded later: it is applied then, exactly once);
* ``414`` for a URL over ``MAX_URL`` bytes; ``405`` for another method.

:class:`CallbackApp` is an ASGI application; :class:`CallbackServer` runs it under uvicorn (the
httptools parser on uvloop, the simulator's own stack): malformed request lines get uvicorn's
400 at once, a client that went away costs nothing but a closed transport. One writer thread
records the reports (:class:`GroupCommit`): whatever arrived while the previous transaction ran
is committed together, and each request is answered once its own report is committed. Bursts of
callbacks then cost one transaction per batch instead of one per request, and SQLite sees a
single writer. The same thread looks for kept receipts' IDs (``DeliveryStore.sweep``) when due.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

from batch_sender.errors import StoreError
from batch_sender.gateway import delivery_codes as statuses
from batch_sender.store.delivery import Applied, DeliveryReport, DeliveryStore, ReceiptWriter

__all__ = [
    "MAX_BODY",
    "BadCallback",
    "CallbackApp",
    "CallbackAuth",
    "CallbackServer",
    "GroupCommit",
    "ReceiverStats",
    "parse_callback",
]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # bytes; a callback is a few hundred
MAX_URL = 8 * 1024  # bytes of path and query; longer: 414
MAX_FIELDS = 100  # form/query fields per request
IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may sit idle
TOKEN_HEADER = "X-Callback-Token"
MAX_CHARGE = 1e6  # credits; larger values are not charges
MAX_BATCH = 500  # reports committed in one transaction at most
SWEEP_INTERVAL = 1.0  # seconds between looks for kept receipts' IDs (when any are due)
BACKLOG = 2048  # listen backlog: a flood of new connections queues, not refused
_REALM = 'Basic realm="batch-sender callbacks"'


class _Headers(Protocol):
    """What a request's headers offer: ``get`` (an ``email.message.Message`` or a dict)."""

    def get(self, name: str, /) -> str | None: ...


class BadCallback(ValueError):
    """The request is not a usable status callback (answered 400)."""


def parse_callback(query: str, body: bytes, content_type: str = "") -> DeliveryReport:
    """The delivery report a callback request carries; :class:`BadCallback` if none."""
    return _report(_params(query, body, content_type))


def _report(params: Mapping[str, str]) -> DeliveryReport:
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
    return _mo(params)


def _mo(params: Mapping[str, str]) -> tuple[str, str] | None:
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
    kept: int = 0  # matched nothing yet: in the inbox (202)
    bad: int = 0  # 400/411/414
    refused: int = 0  # 401/403
    errors: int = 0  # 503
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class _Pending:
    __slots__ = ("applied", "done", "error", "future", "loop", "report")

    def __init__(self, report: DeliveryReport, done: Callable[[_Pending], None] | None) -> None:
        self.report = report
        self.done = done  # called on the writer thread once committed (or failed)
        self.applied: Applied | None = None
        self.error: StoreError | None = None
        # or, for a coroutine: resolved on its loop, one hand-over per batch and loop
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


class GroupCommit:
    """One writer thread recording reports in batches; callers wait until theirs is committed.

    Between batches (at most every :data:`SWEEP_INTERVAL`) it also applies kept receipts whose
    IDs a run recorded meanwhile without the receiver's lookup seeing them (``sweep``).
    """

    def __init__(
        self,
        deliveries: DeliveryStore,
        *,
        max_batch: int = MAX_BATCH,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self._deliveries = deliveries
        self._max_batch = max_batch
        self._sweep_interval = sweep_interval
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="callback-writer", daemon=True)
        self._closed = False
        self.transactions = 0
        self._thread.start()

    def record(self, report: DeliveryReport) -> Applied:
        """Record ``report``; returns once it is committed. :class:`StoreError` if it was not."""
        event = threading.Event()
        pending = self._put(report, lambda _: event.set())
        event.wait()
        return self._result(pending)

    async def record_async(self, report: DeliveryReport) -> Applied:
        """:meth:`record` for a coroutine on a running event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        pending = self._put(report, None, future, loop)
        await future
        return self._result(pending)

    def _put(
        self,
        report: DeliveryReport,
        done: Callable[[_Pending], None] | None,
        future: asyncio.Future[None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> _Pending:
        if self._closed:
            raise StoreError("the receiver is shutting down")
        pending = _Pending(report, done)
        pending.future, pending.loop = future, loop
        self._queue.put(pending)
        return pending

    @staticmethod
    def _result(pending: _Pending) -> Applied:
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
        writer = self._deliveries.writer()  # one connection for every batch of this thread
        try:
            self._loop(writer)
        finally:
            writer.close()

    def _loop(self, writer: ReceiptWriter) -> None:
        next_sweep = time.monotonic()
        while True:
            try:
                first = self._queue.get(timeout=self._sweep_interval)
            except queue.Empty:
                first = None if self._closed else _IDLE
            if first is None:
                return
            if first is not _IDLE:
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
                self._commit(writer, batch)
            if time.monotonic() >= next_sweep:
                self._sweep(writer)
                next_sweep = time.monotonic() + self._sweep_interval

    def _sweep(self, writer: ReceiptWriter) -> None:
        try:
            applied = writer.sweep()
        except StoreError as exc:
            log.warning("matching kept receipts failed (will try again): %s", exc)
            return
        except Exception:
            log.exception("matching kept receipts failed")
            return
        if applied:
            log.info("applied %d kept receipts whose message IDs were recorded", applied)

    def _commit(self, writer: ReceiptWriter, batch: list[_Pending]) -> None:
        try:
            applied = writer.record([p.report for p in batch])
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
        waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for p in batch:
            if p.done is not None:
                p.done(p)
            elif p.loop is not None and p.future is not None:
                waiting.setdefault(p.loop, []).append(p.future)
        for loop, futures in waiting.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits now
                loop.call_soon_threadsafe(_resolve_all, futures)


_IDLE = _Pending(DeliveryReport(status="000"), lambda _: None)  # the queue stayed empty


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # (cancelled when the client went away)
            future.set_result(None)


_APPLIED_ANSWER = {
    Applied.UPDATED: (200, "updated"),
    Applied.RECORDED: (200, "recorded"),
    Applied.DUPLICATE: (200, "duplicates"),
    Applied.UNKNOWN: (200, "unknown"),
    Applied.KEPT: (202, "kept"),
}

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _HeaderMap:
    """An ASGI scope's headers with the case-insensitive ``get`` that :class:`CallbackAuth` uses.

    ASGI servers give header names lower-cased; values are decoded only when asked for.
    """

    __slots__ = ("_items",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._items = {k.lower(): v for k, v in raw}

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._items.get(name.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")


class CallbackApp:
    """The receiver as an ASGI application: parse, authenticate, hand to the writer, answer.

    Runs under any ASGI server; :class:`CallbackServer` (and ``batch-sender callbacks``) use
    uvicorn. Needs a :class:`GroupCommit` whose writer thread outlives the server's loop.
    """

    def __init__(
        self,
        writer: GroupCommit,
        *,
        auth: CallbackAuth | None = None,
        max_body: int = MAX_BODY,
        on_mo: Callable[[str, str], bool] | None = None,
        stats: ReceiverStats | None = None,
    ) -> None:
        self.writer = writer
        self.auth = auth or CallbackAuth()
        self.max_body = max_body
        #: called with (from, text) for inbound replies; True when it was a stop request
        self.on_mo = on_mo
        self.stats = stats or ReceiverStats()

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        if len(scope.get("raw_path") or b"") + len(query) > MAX_URL:
            await self._refuse(send, 414, f"URL longer than {MAX_URL} bytes")
            return
        if method not in ("GET", "POST"):
            await self._refuse(send, 405, "use GET or POST", {"allow": "GET, POST"})
            return
        headers = _HeaderMap(scope["headers"])
        body = b""
        if method == "POST":
            length = headers.get("content-length")
            if headers.get("transfer-encoding") or length is None:
                await self._refuse(send, 411, "send a Content-Length")
                return
            try:
                size = int(length)
            except ValueError:
                await self._refuse(send, 400, "bad Content-Length")
                return
            if size < 0 or size > self.max_body:
                await self._refuse(send, 400, f"body larger than {self.max_body} bytes")
                return
            body = await _read_body(receive)
        await self._handle(scope, headers, query, body, send)

    async def _handle(
        self, scope: _Scope, headers: _HeaderMap, query: str, body: bytes, send: _Send
    ) -> None:
        stats = self.stats
        denied = self.auth.check(headers, query)
        if denied is not None:
            stats.count("refused")
            extra = {"www-authenticate": _REALM} if denied == 401 else {}
            await _reply(send, denied, "unauthorized" if denied == 401 else "forbidden", extra)
            return
        content_type = headers.get("content-type") or ""
        try:
            params = _params(query, body, content_type)  # once, for either kind
            mo = _mo(params)
            if mo is not None:
                await self._inbound(send, *mo)
                return
            report = _report(params)
        except BadCallback as exc:
            stats.count("bad")
            client = scope.get("client") or ("?",)
            log.info("bad callback from %s: %s", client[0], exc)
            await _reply(send, 400, str(exc))
            return
        try:
            applied = await self.writer.record_async(report)
        except StoreError as exc:
            stats.count("errors")
            log.error("could not record a delivery status: %s", exc)
            await _reply(send, 503, "cannot record now, try again later")
            return
        start, body_message, counter = _ANSWERS[applied]
        stats.count(counter)
        await send(start)
        await send(body_message)

    async def _inbound(self, send: _Send, sender: str, text: str) -> None:
        """An inbound reply: a stop keyword puts its sender on the suppression list."""
        on_mo = self.on_mo
        try:
            stopped = on_mo is not None and await asyncio.to_thread(on_mo, sender, text)
        except StoreError as exc:
            self.stats.count("errors")
            log.error("could not record a stop reply: %s", exc)
            await _reply(send, 503, "cannot record now, try again later")
            return
        await _reply(send, 200, "stop recorded" if stopped else "mo ignored")

    async def _refuse(
        self, send: _Send, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer without reading the body, and close: the rest of the stream is unread."""
        self.stats.count("bad")
        await _reply(send, status, message, {**(headers or {}), "connection": "close"})


async def _read_body(receive: _Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(parts)


def _answer(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a plain-text answer."""
    data = (message + "\n").encode("utf-8", "replace")
    raw = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(data)).encode()),
        (b"server", b"batch-sender-callbacks"),
    ]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    return (
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": data},
    )


async def _reply(
    send: _Send, status: int, message: str, headers: Mapping[str, str] | None = None
) -> None:
    start, body = _answer(status, message, headers)
    await send(start)
    await send(body)


#: the answers to a recorded receipt, built once (the server only reads them)
_ANSWERS = {
    applied: (*_answer(status, applied.value), counter)
    for applied, (status, counter) in _APPLIED_ANSWER.items()
}


async def _lifespan(receive: _Receive, send: _Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class CallbackServer:
    """The receiver under uvicorn: ``serve_forever()`` in the foreground, or ``start()``/``stop()``.

    The socket is bound when constructed (``OSError`` if the port is taken; port 0 picks one);
    uvicorn runs the :class:`CallbackApp` on it with httptools and uvloop, one process (one
    writer: SQLite takes one at a time anyway, and one transaction per batch is what is fast).
    """

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
        import uvicorn

        self.deliveries = deliveries
        self.stats = ReceiverStats()
        self.writer = GroupCommit(deliveries)
        self.app = CallbackApp(
            self.writer, auth=auth, max_body=max_body, on_mo=on_mo, stats=self.stats
        )
        try:
            self._socket = _bind(host, port)
        except BaseException:
            self.writer.close()
            raise
        self.server_address = self._socket.getsockname()
        config = uvicorn.Config(
            self.app,
            http="httptools",
            loop="uvloop" if _has_uvloop() else "asyncio",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,  # behind nginx: its log has the client addresses
            date_header=False,
            timeout_keep_alive=int(IDLE_TIMEOUT),
            backlog=BACKLOG,
        )
        self._server = uvicorn.Server(config)
        _quiet_uvicorn()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def auth(self) -> CallbackAuth:
        return self.app.auth

    @property
    def url(self) -> str:
        """``http://host:port/`` as bound (the real port when 0 was asked)."""
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or :meth:`stop`."""
        self._server.run(sockets=[self._socket])

    def start(self) -> CallbackServer:
        """Serve on a background thread; returns self once it accepts connections."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="callback-receiver", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the callback receiver did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving, close the socket, let the writer finish."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._thread = None
        self.server_close()

    def server_close(self) -> None:
        """Close the socket, then let the writer commit what it was given and stop."""
        if not self._closed:
            self._closed = True
            self._socket.close()
            self.writer.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _quiet_uvicorn() -> None:
    """uvicorn's own lines through our logger: start/stop, and a request it could not parse
    (answered 400 already; anyone can send them) at debug, real errors as they are."""
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.handlers = [_Forward()]
        logger.setLevel(logging.DEBUG)


class _Forward(logging.Handler):
    """Hands uvicorn's records to our logger's handlers (their format, their redaction)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if log.isEnabledFor(record.levelno):
            log.handle(record)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
