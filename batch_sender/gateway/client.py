"""The gateway client: one SOAP call in, one typed result out, over one keep-alive httpx client.

This layer does no retrying and keeps no policy: the sender decides what an exception means for
its recipients. The one exception is the session: the client authenticates lazily, sends the
session ID instead of the credentials, and when the gateway says the session is gone (ERR 003/005,
or ERR 001 on a session-based request) authenticates again once and repeats that call.

httpx errors are wrapped here, and only here, by whether the request can have reached the gateway:

* ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, ``ProxyError`` are raised before any
  byte of the request is written (connecting, TLS, waiting for a pooled connection, proxy
  tunnel): :class:`errors.TransportError`, safe to retry.
* Everything else that can fail in flight (``WriteError``/``WriteTimeout``, since part or all of
  the request may be in the peer's buffers; ``ReadTimeout``, ``ReadError``,
  ``RemoteProtocolError``, a response we cannot decode) means the gateway may have accepted it:
  :class:`errors.OutcomeUnknown`, never resent blindly.
* ``UnsupportedProtocol``/``InvalidURL`` are configuration mistakes: :class:`errors.InputError`.

Credentials (and the session ID) never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from types import TracebackType
from typing import TypeVar

import httpx

from batch_sender import errors, redact
from batch_sender.gateway import wire
from batch_sender.gateway.transport import DEFAULT_PORTS, KeepAliveTransport
from batch_sender.gateway.wire import MessageCharge, MessageStatus, Receipt

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEEPALIVE_EXPIRY",
    "OPTION_NAMES",
    "ClientSpec",
    "Credentials",
    "GatewayClient",
    "Message",
    "MessageCharge",
    "Receipt",
    "MessageStatus",
    "message_params",
]

log = logging.getLogger(__name__)

#: Connect, read, write and pool timeouts when the caller gives none (seconds).
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
#: Seconds an idle pooled connection is kept; below common server keep-alive timeouts (5 s),
#: so we close idle connections before the server does (a reuse racing a server-side close
#: would fail after the request left, i.e. as an unknown outcome).
KEEPALIVE_EXPIRY = 4.0
#: ``sendmsg`` elements a :class:`Message` may carry in ``options`` (the rest have fields).
OPTION_NAMES = frozenset(
    {"deliv_ack", "deliv_time", "validity", "max_credits", "req_feat", "escalate", "mo", "queue"}
)
#: Codes that, on a request sent with a session ID, mean "authenticate again" (ref. §2).
_REAUTH_CODES = frozenset({"001", *errors.SESSION_CODES})
_REDACTED = "***"
CONTENT_TYPE = "text/xml; charset=UTF-8"
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?\Z")

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    """The API connection's ``api_id``, user name and password; the password is never shown."""

    api_id: str
    user: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(api_id={self.api_id!r}, user={self.user!r}, password={_REDACTED!r})"


@dataclass(frozen=True)
class ClientSpec:
    """How to build a :class:`GatewayClient` again, in another process (it pickles)."""

    url: str
    credentials: Credentials
    max_connections: int
    timeout: httpx.Timeout


@dataclass(frozen=True, slots=True)
class Message:
    """One ``sendmsg`` payload, shared by every ``<to>`` of a request.

    ``text`` is the wire text (already UCS-2 hex when ``unicode``), or ``None`` with ``data``.
    ``options`` holds any other sendmsg element by name (see :data:`OPTION_NAMES`).
    """

    text: str | None
    unicode: bool = False
    sender: str | None = None  # <from>
    msg_type: str | None = None  # e.g. "SMS_FLASH"
    udh: str | None = None
    data: str | None = None
    callback: int | None = None  # <msg_callback>, 0-7
    concat: int | None = None
    options: tuple[tuple[str, str], ...] = ()


@functools.lru_cache(maxsize=256)
def message_params(message: Message) -> Mapping[str, object]:
    """The sendmsg elements of ``message`` (cached: a campaign reuses one message per chunk)."""
    if message.text is None and message.data is None:
        raise errors.InputError("a message needs text or data")
    params: dict[str, object] = {
        "text": message.text,
        "unicode": 1 if message.unicode else None,
        "from": message.sender,
        "msg_type": message.msg_type,
        "udh": message.udh,
        "data": message.data,
        "msg_callback": message.callback,
        "concat": message.concat,
    }
    for name, value in message.options:
        if name not in OPTION_NAMES:
            raise errors.InputError(
                f"unknown sendmsg option {name!r} (allowed: {', '.join(sorted(OPTION_NAMES))})"
            )
        if name in params:
            raise errors.InputError(f"sendmsg option {name!r} given twice")
        params[name] = value
    return params


class GatewayClient:
    """A thread-safe client for the gateway's SOAP API: one method per operation, no retries.

    Share one instance between worker threads; close it (or use ``with``) when done.
    """

    def __init__(
        self,
        *,
        url: str,
        credentials: Credentials,
        max_connections: int = 8,
        timeout: httpx.Timeout | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url
        self._credentials = credentials
        #: every secret of this process; the password now, each session ID as it is given
        self._redactor = redact.SECRETS
        self._redactor.add(credentials.password)
        # None when a transport was given: an in-memory transport cannot be rebuilt elsewhere
        self._spec = (
            None
            if transport is not None
            else ClientSpec(url, credentials, max_connections, timeout or DEFAULT_TIMEOUT)
        )
        self._session_id: str | None = None
        self._session_lock = threading.Lock()
        try:
            self.url = str(httpx.URL(url).copy_with(username=None, password=None))
        except (httpx.InvalidURL, TypeError) as exc:
            raise errors.InputError(f"invalid gateway URL: {exc}") from exc
        chosen = transport if transport is not None else _default_transport(max_connections)
        self._http = httpx.Client(
            timeout=timeout or DEFAULT_TIMEOUT,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            headers={"Content-Type": CONTENT_TYPE},
            transport=chosen,
        )
        #: our own keep-alive transport, called without httpx's request and response objects
        #: (see :meth:`_post`); None when requests go through httpx (a transport was given, a
        #: proxy is configured, or the URL carries credentials httpx would send as basic auth)
        self._direct: _Direct | None = None
        if transport is None and isinstance(chosen, KeepAliveTransport):
            self._direct = _Direct.for_url(chosen, url, self._http.timeout)

    @classmethod
    def from_spec(cls, spec: ClientSpec) -> GatewayClient:
        """A client like the one whose :meth:`spec` this is (its own connections and session)."""
        return cls(
            url=spec.url,
            credentials=spec.credentials,
            max_connections=spec.max_connections,
            timeout=spec.timeout,
        )

    def spec(self) -> ClientSpec | None:
        """What :meth:`from_spec` needs to build this client again; None if it cannot."""
        return self._spec

    def __repr__(self) -> str:
        c = self._credentials
        return f"GatewayClient(url={self.url!r}, api_id={c.api_id!r}, user={c.user!r})"

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self._http.close()

    # -- operations ---------------------------------------------------------------------------

    def sendmsg(
        self, to: Sequence[str], message: Message, *, climsgid: str | None = None
    ) -> list[Receipt]:
        """Send ``message`` to every number of ``to`` (1-300) in one request.

        Returns one :class:`Receipt` per ``<return>``: an ID or a per-destination error, with
        its ``To:`` number (filled in for a single-number request). Numbers the answer does not
        mention got no receipt: their outcome is unknown. A request-level error (a single ``ERR``
        without ``To:``, the same non-destination code for every number, or such a code for a
        single number) raises the exception of its class (:func:`errors.gateway_error_for_code`).
        """
        to, params = sendmsg_params(to, message, climsgid)
        receipts = self._with_session("sendmsg", params, sendmsg_receipts(to))
        return self.clean_receipts(receipts)

    def clean_receipts(self, receipts: list[Receipt]) -> list[Receipt]:
        """``receipts`` with every known secret blanked out of their error descriptions."""
        if any(r.error_description for r in receipts):  # the gateway's words: no secret in them
            clean = self._redactor.optional
            receipts = [
                r._replace(error_description=clean(r.error_description))
                if r.error_description
                else r
                for r in receipts
            ]
        return receipts

    def auth(self) -> str:
        """Authenticate now and keep the new session for later calls; returns the session ID."""
        with self._session_lock:
            self._session_id = self._authenticate()
            return self._session_id

    def ping(self) -> None:
        """Keep the session alive (it expires after 15 idle minutes)."""
        self._with_session("ping", {}, lambda lines: wire.parse_ok(_single(lines)))

    def getbalance(self) -> float:
        """The account's balance in credits."""
        return self._with_session(
            "getbalance", {}, lambda lines: wire.parse_balance(_single(lines))
        )

    def querymsg(
        self, *, apimsgid: str | None = None, climsgid: str | None = None
    ) -> MessageStatus:
        """A message's status by API or client message ID.

        An ID the gateway does not know raises :class:`errors.RequestRejected` with code
        ``"103"`` (API ID) or ``"104"`` (client ID: the request was never accepted).
        """
        if apimsgid is None and climsgid is None:
            raise errors.InputError("querymsg needs apimsgid or climsgid")
        params = {"apimsgid": apimsgid, "climsgid": climsgid}
        return self._with_session("querymsg", params, lambda ls: wire.parse_status(_single(ls)))

    def delmsg(self, *, apimsgid: str | None = None, climsgid: str | None = None) -> MessageStatus:
        """Stop a message still queued at the gateway; status ``"006"`` when it was stopped."""
        if apimsgid is None and climsgid is None:
            raise errors.InputError("delmsg needs apimsgid or climsgid")
        params = {"apimsgid": apimsgid, "climsgid": climsgid}
        return self._with_session("delmsg", params, lambda ls: wire.parse_status(_single(ls)))

    def getmsgcharge(self, apimsgid: str) -> MessageCharge:
        """Credits charged for a message (and its status), by API message ID."""
        params = {"apimsgid": apimsgid}
        return self._with_session("getmsgcharge", params, lambda ls: wire.parse_charge(_single(ls)))

    def routecoverage(self, msisdn: str) -> float | None:
        """The current single-part charge for ``msisdn``'s prefix, or None when it is not routed."""
        params = {"msisdn": msisdn}
        return self._with_session(
            "routecoverage", params, lambda ls: wire.parse_coverage(_single(ls))
        )

    # -- sessions -----------------------------------------------------------------------------

    def _with_session(
        self, operation: str, params: Mapping[str, object], read: Callable[[list[str]], T]
    ) -> T:
        """Call ``operation`` with the session ID; on a session error, re-authenticate once."""
        session = self._session()
        try:
            return self._call(operation, {"session_id": session, **params}, read)
        except (errors.SessionExpired, errors.RunStopped) as exc:
            if not self.session_ended(exc, session, operation):
                raise
        return self._call(operation, {"session_id": self._session(), **params}, read)

    def session_ended(self, exc: errors.GatewayError, session: str, operation: str) -> bool:
        """Whether ``exc`` (of a call made with ``session``) says "authenticate again"; if so,
        ``session`` is forgotten and the caller repeats the call once with a new one."""
        if exc.code not in _REAUTH_CODES:
            return False
        log.info("gateway session ended (ERR %s on %s): authenticating again", exc.code, operation)
        self._forget(session)
        return True

    def current_session(self) -> str | None:
        """The session ID now held, or None (the next :meth:`session` authenticates)."""
        return self._session_id

    def session(self) -> str:
        """The current session ID, authenticating first if there is none (blocks)."""
        return self._session()

    def redact(self, exc: errors.GatewayError) -> None:
        """Blank every known secret out of ``exc`` (its message and description), in place."""
        self._redactor.exception(exc)

    def _call(
        self, operation: str, params: Mapping[str, object], read: Callable[[list[str]], T]
    ) -> T:
        """POST ``operation`` and read its answer: the boundary where gateway text enters.

        Every exception of the call (``ERR`` lines read by ``read`` included) leaves with every
        known secret blanked out of its message and description (see ``redact``).
        """
        try:
            return read(self._post(operation, params))
        except errors.GatewayError as exc:
            self._redactor.exception(exc)
            raise

    def _session(self) -> str:
        """The current session ID, authenticating first if there is none."""
        with self._session_lock:
            if self._session_id is None:
                self._session_id = self._authenticate()
            return self._session_id

    def _forget(self, session: str) -> None:
        """Drop ``session`` unless another thread has already replaced it."""
        with self._session_lock:
            if self._session_id == session:
                self._session_id = None

    def _authenticate(self) -> str:
        """Run ``auth`` with the credentials; ERR 001 here stops the run (RunStopped)."""
        c = self._credentials
        params = {"api_id": c.api_id, "user": c.user, "password": c.password}
        session = self._call("auth", params, lambda lines: wire.parse_ok(_single(lines)))
        if not session or any(ch.isspace() for ch in session):
            raise errors.ProtocolError("auth answered OK without a session ID")
        self._redactor.add(session)  # kept after the session ends: an old one may be echoed
        log.info("authenticated with the gateway at %s (api_id %s)", self.url, c.api_id)
        return session

    # -- HTTP ---------------------------------------------------------------------------------

    def _post(self, operation: str, params: Mapping[str, object]) -> list[str]:
        """POST one SOAP request and return its ``<return>`` strings; the httpx boundary."""
        body = wire.build_request(operation, params)
        if self._direct is not None:
            try:
                status, headers, content = self._direct.post(operation, body)
            except httpx.HTTPError as exc:
                raise self._wrap(exc, operation) from exc
            return _returns(status, headers, content, operation)
        soap = {"SOAPAction": f'"{wire.soap_action(operation)}"'}
        try:
            with self._http.stream("POST", self._url, content=body, headers=soap) as resp:
                content = _read_limited(resp)
        except httpx.HTTPError as exc:
            raise self._wrap(exc, operation) from exc
        return _returns(resp.status_code, resp.headers, content, operation)

    def _wrap(self, exc: httpx.HTTPError, operation: str) -> errors.BatchSenderError:
        """The batch-sender exception for an httpx error, by whether the request may have left."""
        what = f"{operation} to {self.url}: {type(exc).__name__}: {exc}"
        if isinstance(
            exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ProxyError
        ):
            return errors.TransportError(f"request not sent: {what}")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return errors.InputError(f"bad gateway URL: {what}")
        if isinstance(exc, httpx.DecodingError):
            return errors.ProtocolError(f"undecodable answer: {what}")
        return errors.OutcomeUnknown(f"answer lost after the request left: {what}")


@dataclass(frozen=True, slots=True)
class _Direct:
    """POST to one URL through :meth:`KeepAliveTransport.exchange`, headers built once.

    The same request httpx would send (its default headers, ``Content-Type``, ``SOAPAction``)
    but ``Accept-Encoding``: answers come uncompressed, or are decoded as httpx would.
    """

    transport: KeepAliveTransport
    key: tuple[str, str, int]
    target: str
    head: tuple[tuple[str, str], ...]  # Host first, then the headers every request carries
    timeout: Mapping[str, float | None]

    @classmethod
    def for_url(
        cls, transport: KeepAliveTransport, url: str, timeout: httpx.Timeout
    ) -> _Direct | None:
        """None when the URL needs httpx (credentials in it: basic auth; not http(s))."""
        target = direct_target(url)
        if target is None:
            return None
        key, path, head = target
        return cls(transport, key, path, head, timeout.as_dict())

    def post(self, operation: str, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """``(status, headers, body)`` of one POST; httpx's exceptions for failures."""
        headers = (
            *self.head,
            ("SOAPAction", soap_action_header(operation)),
            ("Content-Length", str(len(body))),
        )
        status, _, raw, content = self.transport.exchange(
            self.key, "POST", self.target, headers, body, self.timeout
        )
        return answer(status, raw, content)


def direct_target(
    url: str,
) -> tuple[tuple[str, str, int], str, tuple[tuple[str, str], ...]] | None:
    """``(origin, path, headers)`` of a POST to ``url`` without httpx: the headers httpx would
    send (``Host`` first) but ``Accept-Encoding``; None when the URL needs httpx (credentials
    in it, sent as basic auth; a scheme other than http(s))."""
    parsed = httpx.URL(url)
    if parsed.userinfo or parsed.scheme not in DEFAULT_PORTS:
        return None
    head = (
        ("Host", parsed.netloc.decode("ascii")),
        ("Accept", "*/*"),
        ("Connection", "keep-alive"),
        ("User-Agent", f"python-httpx/{httpx.__version__}"),
        ("Content-Type", CONTENT_TYPE),
    )
    key = (parsed.scheme, parsed.host, parsed.port or DEFAULT_PORTS[parsed.scheme])
    return key, parsed.raw_path.decode("ascii"), head


def proxy_configured() -> bool:
    """Whether the environment names a proxy, which httpx honours and our transports would not."""
    return any(
        name.lower().endswith("_proxy") and name.lower() != "no_proxy" for name in os.environ
    )


def answer(
    status: int, raw: Sequence[tuple[str, str]], content: bytes
) -> tuple[int, Mapping[str, str], bytes]:
    """An answer as :func:`_returns` reads it: headers by lower-case name, the body decoded and
    size-checked as httpx would (answers come uncompressed unless a server insists)."""
    found = {name.lower(): value for name, value in raw}  # (what _returns reads)
    if found.get("content-encoding", "identity").strip().lower() != "identity":
        # not asked for, but decoded (and size-checked) as httpx would
        response = httpx.Response(status, headers=list(raw), stream=httpx.ByteStream(content))
        content = _read_limited(response)
    elif len(content) > wire.MAX_BODY_BYTES:
        raise errors.ProtocolError(f"answer over {wire.MAX_BODY_BYTES} bytes refused")
    return status, found, content


def sendmsg_params(
    to: Sequence[str], message: Message, climsgid: str | None
) -> tuple[Sequence[str], dict[str, object]]:
    """The numbers (one string is one number) and the elements of one ``sendmsg``."""
    if isinstance(to, str):
        to = (to,)
    log.debug("sendmsg to %d numbers (climsgid %s)", len(to), climsgid)
    return to, {**message_params(message), "to": to, "climsgid": climsgid}


def sendmsg_receipts(to: Sequence[str]) -> Callable[[list[str]], list[Receipt]]:
    """How a ``sendmsg`` answer to ``to`` is read (request-level errors raised: see sendmsg)."""
    return lambda lines: _receipts(to, lines)


@functools.lru_cache(maxsize=64)
def soap_action_header(operation: str) -> str:
    return f'"{wire.soap_action(operation)}"'


def _default_transport(max_connections: int) -> httpx.BaseTransport | None:
    """Keep-alive over ``http.client`` (see ``transport``); None, httpx's own, when a proxy is
    configured in the environment, which httpx honours and ``http.client`` would not."""
    if proxy_configured():
        return None
    return KeepAliveTransport(
        keepalive_expiry=KEEPALIVE_EXPIRY,
        max_body=wire.MAX_BODY_BYTES,
        max_requests=max_connections,
    )


def _read_limited(response: httpx.Response) -> bytes:
    """The response body, refused beyond ``wire.MAX_BODY_BYTES`` (also after decompression)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > wire.MAX_BODY_BYTES:
        raise errors.ProtocolError(f"answer of {declared} bytes refused")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > wire.MAX_BODY_BYTES:
            raise errors.ProtocolError(f"answer over {wire.MAX_BODY_BYTES} bytes refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _returns(status: int, headers: Mapping[str, str], content: bytes, operation: str) -> list[str]:
    """The ``<return>`` strings of a 200 answer; HTTP errors as the exceptions of their class."""
    if status == 200:
        return wire.parse_response(content, operation)
    if status == 500 and b"Fault" in content:  # SOAP 1.1 sends its Faults with HTTP 500
        with contextlib.suppress(errors.ProtocolError):
            wire.parse_response(content, operation)  # raises SoapFault for a real Fault
    if status == 429 or 500 <= status <= 599:
        retry_after = _retry_after(headers.get("retry-after"), time.time())
        wait = f", Retry-After {retry_after:g}s" if retry_after is not None else ""
        raise errors.ServerBusy(
            f"HTTP {status} from the gateway ({operation}){wait}",
            status=status,
            retry_after=retry_after,
        )
    raise errors.ProtocolError(f"HTTP {status} from the gateway ({operation})")


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if _SECONDS.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _single(lines: list[str]) -> str:
    """The one ``<return>`` of an operation that answers exactly one."""
    if len(lines) != 1:
        raise errors.ProtocolError(f"expected one <return>, got {len(lines)}")
    return lines[0]


def _receipts(to: Sequence[str], lines: list[str]) -> list[Receipt]:
    """Map ``sendmsg`` returns to receipts, raising request-level errors (see ``sendmsg``)."""
    receipts = [wire.parse_return(line) for line in lines]
    first = receipts[0]
    code = first.error_code
    if len(to) == 1:
        if len(receipts) != 1:
            raise errors.ProtocolError(f"{len(receipts)} returns for a single-number sendmsg")
        if code is not None and code not in errors.DESTINATION_CODES:
            raise errors.gateway_error_for_code(code, first.error_description or "")
        return [first if first.to is not None else first._replace(to=to[0])]
    if code is not None:
        # A request-level error is one untargeted <return>, or the same code for every number of
        # the request. An answer that names only some numbers says nothing of the others: they
        # are mapped one by one (the courier makes the unmentioned ones `unknown`), never resent.
        single_untargeted = len(receipts) == 1 and first.to is None
        same_everywhere = (
            code not in errors.DESTINATION_CODES
            and all(r.error_code == code for r in receipts)
            and _numbers(r.to or "" for r in receipts) == _numbers(to)
        )
        if single_untargeted or same_everywhere:
            raise errors.gateway_error_for_code(code, first.error_description or "")
    return receipts


def _numbers(numbers: Iterable[str]) -> set[str]:
    """Numbers as an answer may write them (``+27…``, ``0027…``), to compare with the request."""
    return {n.lstrip("+0") for n in numbers}
