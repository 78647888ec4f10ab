"""A minimal HTTP/1.1 server over asyncio and httptools, built for the simulator's throughput.

uvicorn would do, but a raw protocol is measurably cheaper per request and lets a fault close the
connection at exactly the right moment (before or after the gateway accepted a request).
Keep-alive, pipelining (answered in order), chunked and gzip request bodies are supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Final, cast

import httptools

from batch_sender.simulator.gateway import Reply

__all__ = ["HttpProtocol", "Handler"]

log = logging.getLogger(__name__)

Handler = Callable[[str, str, str, bytes], Reply]  # (method, path, query, body) → Reply

_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_SERVER: Final = b"batch-sender-simulator"


class _Request:
    __slots__ = ("body", "gzip", "keep_alive", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = ""
        self.body: list[bytes] = []
        self.gzip = False
        self.keep_alive = True


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse requests, ask the handler, write answers in order."""

    def __init__(self, handler: Handler, max_body: int, connections: set[HttpProtocol]) -> None:
        self._handler = handler
        self._max_body = max_body
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._current = _Request()
        self._size = 0
        self._queue: deque[_Request] = deque()
        self._busy = False  # an answer is being delayed; later requests wait behind it
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # no Nagle delay on keep-alive answers (uvloop sets it already)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._error(400, b"Upgrade not supported")
            return
        except httptools.HttpParserError:
            self._error(400, b"Bad HTTP request")
            return
        except _TooLarge:
            self._error(413, b"Request body too large")
            return
        self._drain()

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Request()
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-encoding" and value.strip().lower() == b"gzip":
            self._current.gzip = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            raise _TooLarge
        self._current.body.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        request.method = self._parser.get_method().decode("ascii", "replace")
        request.keep_alive = self._parser.should_keep_alive()
        self._queue.append(request)

    def abort(self) -> None:
        """Close the connection now (the server is stopping)."""
        if self._transport is not None:
            self._transport.abort()

    # -- answering -------------------------------------------------------------------------------

    def _drain(self) -> None:
        while self._queue and not self._busy and self._transport is not None:
            request = self._queue.popleft()
            reply = self._answer(request)
            if reply.later is not None:
                # not cancelled when the client leaves: the gateway has the request
                self._busy = True
                self._transport.pause_reading()
                asyncio.get_running_loop().call_later(
                    reply.delay, self._act_later, reply.later, request.keep_alive
                )
                return
            if reply.delay > 0:
                self._busy = True
                self._transport.pause_reading()
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(reply.delay, self._delayed, reply, request.keep_alive)
                return
            self._send(reply, request.keep_alive)

    def _act_later(self, later: Callable[[], Reply], keep_alive: bool) -> None:
        try:
            reply = later()
        except Exception:
            log.exception("simulator handler failed")
            reply = Reply(500, b"Internal Server Error", content_type=b"text/plain")
        self._delayed(reply, keep_alive)

    def _delayed(self, reply: Reply, keep_alive: bool) -> None:
        self._timer = None
        self._busy = False
        if self._transport is None or self._transport.is_closing():
            return
        self._send(reply, keep_alive)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._drain()

    def _answer(self, request: _Request) -> Reply:
        body = b"".join(request.body)
        url = request.url.decode("latin-1")
        path, _, query = url.partition("?")
        try:
            if request.gzip:
                body = gzip.decompress(body)
            return self._handler(request.method, path, query, body)
        except Exception:
            log.exception("simulator handler failed")
            return Reply(500, b"Internal Server Error", content_type=b"text/plain")

    def _send(self, reply: Reply, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        if reply.drop:
            transport.close()
            return
        head = [
            b"HTTP/1.1 %d %s\r\nServer: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (
                reply.status,
                _REASONS.get(reply.status, b"Unknown"),
                _SERVER,
                reply.content_type,
                len(reply.body),
            )
        ]
        head.extend(b"%s: %s\r\n" % header for header in reply.headers)
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        transport.write(b"".join(head) + reply.body)
        if not keep_alive:
            transport.close()

    def _error(self, status: int, message: bytes) -> None:
        self._queue.clear()
        self._send(Reply(status, message, content_type=b"text/plain"), keep_alive=False)


class _TooLarge(Exception):
    """The request body passed the size limit."""
