"""HTTP/1.1 keep-alive for httpx over the standard library's ``http.client``: one connection per
sending thread, none shared, so no pool and no lock between the threads.

httpx's default transport (httpcore) spends about 0.4 ms of CPU on each request, its pool's
bookkeeping included; ``http.client`` about 0.2 ms (one thread, 100-number ``sendmsg`` against the
simulator, ``benchmarks/bench_client.py``). A run sends one request per hundred recipients from
threads that each keep a single connection busy, so a pool buys nothing there. What a pool's
limit did stays: at most ``max_requests`` requests in flight, :class:`httpx.PoolTimeout` for a
request that waits longer than the pool timeout. With a proxy configured in the environment the
client keeps httpx's own transport (``client._default_transport``), which honours it.

Failures are raised as the httpx exceptions of the same meaning, which is what the client's
retry-or-unknown decision rests on: :class:`httpx.ConnectError` / :class:`httpx.ConnectTimeout`
when the request cannot have left; :class:`httpx.WriteError`, :class:`httpx.ReadTimeout`,
:class:`httpx.ReadError` or :class:`httpx.RemoteProtocolError` once it may have. An idle
connection is not reused past ``keepalive_expiry`` seconds, nor when the server has closed it
(it reads as readable while idle): reusing it would fail after the request left.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping

import httpx

__all__ = ["DEFAULT_PORTS", "Key", "KeepAliveTransport"]

Key = tuple[str, str, int]  # scheme, host, port
_Key = Key
DEFAULT_PORTS = {"http": 80, "https": 443}


class _Connection:
    __slots__ = ("conn", "last_used")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.last_used = time.monotonic()


class KeepAliveTransport(httpx.BaseTransport):
    """An httpx transport keeping one HTTP/1.1 connection per thread and origin."""

    def __init__(self, *, keepalive_expiry: float, max_body: int, max_requests: int) -> None:
        self._expiry = keepalive_expiry
        # requests in flight at once, like a pool's connection limit (httpx.PoolTimeout past
        # the pool timeout); each thread holds at most one
        self._slots = threading.BoundedSemaphore(max_requests)
        self._max_body = max_body
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()  # guards _open (close() comes from another thread)
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        key = (url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme, 80))
        status, reason, headers, content = self.exchange(
            key,
            request.method,
            url.raw_path.decode("ascii"),
            request.headers.raw,
            request.read(),
            timeout,
            request=request,
        )
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason.encode()},
            request=request,
        )

    def exchange(
        self,
        key: _Key,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes] | tuple[str, str]],
        body: bytes,
        timeout: Mapping[str, float | None],
        *,
        request: httpx.Request | None = None,
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """One request on this thread's connection to ``key`` (scheme, host, port):
        ``(status, reason, headers, body)``, failures as httpx's exceptions (module docstring).

        :meth:`handle_request` is this behind httpx; the gateway client calls it directly for
        a request it has already built (``headers`` complete, ``Host`` first), without httpx's
        request and response objects (about 40% of a one-recipient request's CPU).
        """
        wait = timeout.get("pool")
        if not self._slots.acquire(timeout=wait):
            raise httpx.PoolTimeout(f"no request slot free within {wait}s", request=request)
        try:
            return self._send(key, method, target, headers, body, timeout, request)
        finally:
            self._slots.release()

    def _send(
        self,
        key: _Key,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes] | tuple[str, str]],
        body: bytes,
        timeout: Mapping[str, float | None],
        request: httpx.Request | None,
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = self._connection(key, timeout.get("connect"))
        sock = conn.sock
        assert sock is not None
        try:
            sock.settimeout(timeout.get("write"))
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body)
        except OSError as exc:  # the request may have partly left: never "not sent"
            self._drop(key)
            kind = httpx.WriteTimeout if isinstance(exc, TimeoutError) else httpx.WriteError
            raise kind(str(exc) or type(exc).__name__, request=request) from exc
        try:
            sock.settimeout(timeout.get("read"))
            response = conn.getresponse()
            content = response.read(self._max_body + 1)
        except TimeoutError as exc:
            self._drop(key)
            raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
        except (http.client.HTTPException, ValueError) as exc:
            self._drop(key)
            message = str(exc) or type(exc).__name__
            raise httpx.RemoteProtocolError(message, request=request) from exc
        except OSError as exc:
            self._drop(key)
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
        if response.will_close or len(content) > self._max_body or not response.isclosed():
            self._drop(key)  # closing, or a body left unread on the wire
        else:
            self._local.connections[key].last_used = time.monotonic()
        return response.status, response.reason, response.getheaders(), content

    def close(self) -> None:
        """Close every thread's connections."""
        with self._lock:
            self._closed = True
            conns, self._open = self._open, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    # -- connections ---------------------------------------------------------------------------

    def _connection(self, key: _Key, connect_timeout: float | None) -> http.client.HTTPConnection:
        """This thread's connection to ``key``: reused while fresh and still open, else new."""
        mine: dict[_Key, _Connection] | None = getattr(self._local, "connections", None)
        if mine is None:
            mine = self._local.connections = {}
        held = mine.get(key)
        if held is not None:
            sock = held.conn.sock
            if (
                sock is not None
                and time.monotonic() - held.last_used < self._expiry
                and not _readable(sock)
            ):
                return held.conn
            self._drop(key)
        with self._lock:
            if self._closed:
                raise httpx.ConnectError("the transport is closed")
        scheme, host, port = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                host, port, timeout=connect_timeout, context=self._tls()
            )
        elif scheme == "http":
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        else:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake: nothing was sent
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        mine[key] = _Connection(conn)
        with self._lock:
            self._open.add(conn)
        return conn

    def _drop(self, key: _Key) -> None:
        """Close this thread's connection to ``key`` and forget it."""
        held = self._local.connections.pop(key, None)
        if held is None:
            return
        with self._lock:
            self._open.discard(held.conn)
        with contextlib.suppress(OSError):
            held.conn.close()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (or misspoke)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
