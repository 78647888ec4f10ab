"""``sendmsg`` from coroutines: the gateway client's event-loop side, for hundreds in flight.

:class:`AsyncGatewayClient` sends what :class:`~batch_sender.gateway.client.GatewayClient` sends
and reads its answers with the same code: the envelope from ``wire.build_request``, the answer
through ``client._returns`` and the receipts through ``client.sendmsg_receipts``; httpx's
exceptions become batch-sender's with the sync client's own ``_wrap`` (by whether the request
can have left), and every secret is blanked out of them by its redactor. The session is the sync
client's: the async client uses the session it holds and, when there is none or the gateway ends
it (ERR 003/005, 001 on a session), authenticates through it on a worker thread (once, however
many coroutines ask at the same moment: the sync client's lock).

Requests go through :class:`~batch_sender.gateway.aiotransport.AsyncKeepAlive` (no httpx object
per request), or through :class:`httpx.AsyncClient` when a proxy is configured in the
environment or the URL carries credentials, as the sync client falls back to httpx's transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import httpx

from batch_sender import errors
from batch_sender.gateway import wire
from batch_sender.gateway.aiotransport import AsyncKeepAlive, request_bytes
from batch_sender.gateway.client import (
    CONTENT_TYPE,
    KEEPALIVE_EXPIRY,
    GatewayClient,
    Message,
    Receipt,
    _read_limited,
    _returns,
    answer,
    direct_target,
    proxy_configured,
    sendmsg_params,
    sendmsg_receipts,
    soap_action_header,
)

__all__ = ["AsyncGatewayClient"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class AsyncGatewayClient:
    """``sendmsg`` for coroutines of one event loop, over ``client``'s session and secrets.

    ``client`` must be rebuildable (``client.spec()``: a real URL, no test transport).
    """

    def __init__(self, client: GatewayClient, *, max_connections: int) -> None:
        spec = client.spec()
        if spec is None:
            raise ValueError("an async client needs a gateway client built from a URL")
        self._client = client
        self.url = client.url
        self._timeout = spec.timeout.as_dict()
        target = None if proxy_configured() else direct_target(spec.url)
        self._transport: AsyncKeepAlive | None = None
        self._http: httpx.AsyncClient | None = None
        if target is not None:
            self._key, path, head = target
            self._transport = AsyncKeepAlive(
                keepalive_expiry=KEEPALIVE_EXPIRY,
                max_body=wire.MAX_BODY_BYTES,
                max_requests=max_connections,
            )
            self._path, self._head = path, head
        else:
            self._http = httpx.AsyncClient(
                timeout=spec.timeout,
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_connections,
                    keepalive_expiry=KEEPALIVE_EXPIRY,
                ),
                headers={"Content-Type": CONTENT_TYPE},
            )
            self._url = spec.url

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._http is not None:
            await self._http.aclose()

    async def sendmsg(
        self, to: Sequence[str], message: Message, *, climsgid: str | None = None
    ) -> list[Receipt]:
        """As :meth:`GatewayClient.sendmsg`, awaited."""
        to, params = sendmsg_params(to, message, climsgid)
        read = sendmsg_receipts(to)
        client = self._client
        held = client.current_session()
        session = held if held is not None else await _in_thread(client.session)
        try:
            receipts = await self._call("sendmsg", {"session_id": session, **params}, read)
        except (errors.SessionExpired, errors.RunStopped) as exc:
            if not client.session_ended(exc, session, "sendmsg"):
                raise
            session = await _in_thread(client.session)
            receipts = await self._call("sendmsg", {"session_id": session, **params}, read)
        return client.clean_receipts(receipts)

    async def _call(
        self, operation: str, params: Mapping[str, object], read: Callable[[list[str]], T]
    ) -> T:
        """POST ``operation`` and read its answer (the sync client's ``_call``, awaited)."""
        try:
            return read(await self._post(operation, params))
        except errors.GatewayError as exc:
            self._client.redact(exc)
            raise

    async def _post(self, operation: str, params: Mapping[str, object]) -> list[str]:
        body = wire.build_request(operation, params)
        try:
            if self._transport is not None:
                headers = (
                    *self._head,
                    ("SOAPAction", soap_action_header(operation)),
                    ("Content-Length", str(len(body))),
                )
                data = request_bytes("POST", self._path, headers, body)
                status, raw, content = await self._transport.exchange(
                    self._key, data, self._timeout
                )
                status, found, content = answer(status, raw, content)
                return _returns(status, found, content, operation)
            assert self._http is not None
            soap = {"SOAPAction": soap_action_header(operation)}
            async with self._http.stream("POST", self._url, content=body, headers=soap) as resp:
                await resp.aread()
                content = _read_limited(resp)
        except httpx.HTTPError as exc:
            raise self._client._wrap(exc, operation) from exc
        return _returns(resp.status_code, resp.headers, content, operation)


async def _in_thread(call: Callable[[], T]) -> T:
    """``call()`` on the loop's worker threads: a blocking call the loop must not wait in."""
    return await asyncio.get_running_loop().run_in_executor(None, call)
