"""HTTP/1.1 keep-alive on an event loop: hundreds of connections held by one thread.

The event-loop twin of ``transport.KeepAliveTransport``. A connection is an
:class:`asyncio.Protocol` whose answers are read by httptools' C parser (the simulator's, already a
dependency); an idle connection costs a socket and a few hundred bytes, not a thread and its stack.
One request at a time per connection, no pipelining; idle connections are reused newest first (the
warmest).

Failures are raised as the httpx exceptions of the same meaning, exactly as the threaded
transport does, which is what the client's retry-or-unknown decision rests on:
:class:`httpx.ConnectError` / :class:`httpx.ConnectTimeout` / :class:`httpx.PoolTimeout` before
any byte of the request is written; once it is written, :class:`httpx.ReadTimeout`,
:class:`httpx.ReadError` or :class:`httpx.RemoteProtocolError`. An idle connection is not reused
past ``keepalive_expiry`` seconds, nor once the server has closed it (the loop has seen its end):
reusing it would fail after the request left.

Timeouts: ``connect`` for opening a connection, ``pool`` for a free request slot, and ``read``
for the whole answer from the moment the request is written (the threaded transport's is per
read of the socket, so a trickling answer is cut sooner here; either way it is a lost answer,
``unknown``). A request is one write into the loop's buffer: there is no write timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence

import httptools
import httpx

__all__ = ["AsyncKeepAlive"]

Key = tuple[str, str, int]  # scheme, host, port
Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body


class _TooLarge(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection: write a request, get its answer through a future."""

    def __init__(self, max_body: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_used = time.monotonic()
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._delimited = False  # the answer's end is known (Content-Length or chunked)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:  # no Nagle delay on a small request after the previous answer
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes while idle: the server misspoke; never reuse this
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except _TooLarge:
            self._fail(httpx.RemoteProtocolError("answer too large"), close=True)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"bad HTTP answer: {exc}"), close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._delimited:  # an answer that ends with its connection
            self._finish(keep_alive=False)
            return
        why = str(exc) if exc else "the server closed the connection before answering"
        self._fail(httpx.ReadError(why), close=False)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1")
        if key.lower() in ("content-length", "transfer-encoding"):
            self._delimited = True
        self._headers.append((key, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._finish(keep_alive=self._parser.should_keep_alive())

    # -- requests -----------------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Answer]:
        """Write one whole request; the future gets its answer (or the httpx error)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._headers, self._body, self._size = [], [], 0
        self._headers_done = self._delimited = False
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, *, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if not keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result((status, self._headers, b"".join(self._body)))

    def _fail(self, exc: Exception, *, close: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if close:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class AsyncKeepAlive:
    """Keep-alive connections per origin for coroutines of one event loop; no locks needed."""

    def __init__(self, *, keepalive_expiry: float, max_body: int, max_requests: int) -> None:
        self._expiry = keepalive_expiry
        self._max_body = max_body
        self._max_requests = max_requests
        self._idle: dict[Key, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._slots: asyncio.Semaphore | None = None  # made on the loop that uses it
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def exchange(
        self,
        key: Key,
        request: bytes,
        timeout: dict[str, float | None],
    ) -> Answer:
        """Send ``request`` (a whole HTTP/1.1 request, head and body) to ``key``; its answer."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_requests)
        slots = self._slots
        try:
            await asyncio.wait_for(slots.acquire(), timeout.get("pool"))
        except TimeoutError:
            raise httpx.PoolTimeout(f"no request slot free within {timeout.get('pool')}s") from None
        try:
            conn = await self._connection(key, timeout.get("connect"))
            self._busy.add(conn)
            try:
                waiter = conn.send(request)  # from here on the request may have left
                try:
                    answer = await asyncio.wait_for(waiter, timeout.get("read"))
                except TimeoutError:
                    conn.close()
                    raise httpx.ReadTimeout("read timed out") from None
                except BaseException:
                    conn.close()  # cancelled, or failed: the answer would arrive unread
                    raise
            finally:
                self._busy.discard(conn)
            if not conn.closed and not self._closed:
                conn.last_used = time.monotonic()
                self._idle.setdefault(key, []).append(conn)
            return answer
        finally:
            slots.release()

    async def _connection(self, key: Key, connect_timeout: float | None) -> _Connection:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if (
                not conn.closed
                and conn.transport is not None
                and not conn.transport.is_closing()
                and now - conn.last_used < self._expiry
            ):
                return conn
            conn.close()
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        scheme, host, port = key
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        loop = asyncio.get_running_loop()
        context = self._tls() if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self._max_body),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                ),
                connect_timeout,
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake: nothing was sent
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def close(self) -> None:
        """Close every connection, idle or busy (a busy one's request fails as a lost answer)."""
        self._closed = True
        conns = [c for held in self._idle.values() for c in held]
        self._idle.clear()
        for conn in (*conns, *self._busy):
            conn.close()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl


def request_bytes(
    method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """One HTTP/1.1 request as it goes on the wire."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body
