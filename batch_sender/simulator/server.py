"""Run the simulated gateway: embedded in a background thread (:class:`Simulator`) or blocking.

One event loop (uvloop when available) in one thread serves every connection, as the real
pipeline's benchmark needs the simulator cheap and predictable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from batch_sender.eventloop import new_loop
from batch_sender.simulator.callbacks import CallbackPoster
from batch_sender.simulator.config import Credentials, SimulatorConfig
from batch_sender.simulator.gateway import WEBSERVICE_PATH, AcceptedMessage, Gateway
from batch_sender.simulator.httpserver import HttpProtocol

__all__ = ["Simulator", "serve"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # seconds to wait for the server thread to finish
_T = TypeVar("_T")


class Simulator:
    """A Clickatell SOAP gateway on loopback, for tests, demos and benchmarks.

    ``Simulator(cfg).start()`` returns once it listens; ``url`` is then the endpoint to use.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.gateway = Gateway(self.config)
        self.port = self.config.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[HttpProtocol] = set()
        self._callbacks: CallbackPoster | None = None

    # -- the public surface ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The SOAP endpoint, ``http://127.0.0.1:PORT/soap/document_literal/webservice``."""
        return f"http://{self.config.host}:{self.port}{WEBSERVICE_PATH}"

    @property
    def wsdl_url(self) -> str:
        """Where the WSDL is served (its ``soap:address`` points back at :attr:`url`)."""
        return f"{self.url}?wsdl"

    @property
    def credentials(self) -> Credentials:
        """The account the simulator accepts (``api_id``, ``user``, ``password``)."""
        return self.config.credentials

    @property
    def accepted(self) -> list[AcceptedMessage]:
        """A snapshot of every accepted message, in acceptance order."""
        return self.gateway.accepted()

    @property
    def accepted_count(self) -> int:
        """How many messages were accepted (cheap; also when ``keep_messages`` is off)."""
        return self.gateway.accepted_count

    @property
    def requests(self) -> int:
        """How many sendmsg requests arrived (whatever their fate)."""
        return self.gateway.requests

    @property
    def open_connections(self) -> int:
        """Client connections open right now (requests in flight, and idle keep-alive ones)."""
        return len(self._connections)

    @property
    def credits(self) -> float:
        """The account balance."""
        return self.gateway.credits

    @property
    def callbacks_posted(self) -> int:
        """Delivery callbacks the receiver acknowledged."""
        return 0 if self._callbacks is None else self._callbacks.posted

    @property
    def callbacks_failed(self) -> int:
        """Delivery callbacks given up after every retry."""
        return 0 if self._callbacks is None else self._callbacks.failed

    def inject(self, kind: str, times: int = 1, **options: Any) -> None:
        """Apply fault ``kind`` to the next ``times`` sendmsg requests (see ``FAULT_KINDS``)."""
        self.gateway.inject(kind, times, **options)

    def set_credits(self, credits: float) -> None:
        """Set the account balance."""
        self.gateway.set_credits(credits)

    def status_of(self, api_message_id: str) -> str | None:
        """The simulated delivery status of a message, None if unknown."""
        return self._call(self._status_of(api_message_id))

    async def _status_of(self, api_message_id: str) -> str | None:
        return self.gateway.status_of(api_message_id)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        """Serve from a background thread; return once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = new_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        self._thread = threading.Thread(target=run, name="clickatell-simulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the record file."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self._server = await loop.create_server(
            lambda: HttpProtocol(self.gateway.handle, cfg.max_body_bytes, self._connections),
            cfg.host,
            cfg.port,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.gateway.open(self.url)
        if cfg.callback_url:
            self._callbacks = CallbackPoster(self.gateway, cfg.callback_url, loop)
            self.gateway.on_accepted = self._callbacks.schedule
        log.info("Clickatell simulator listening on %s", self.url)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        if self._callbacks is not None:
            await self._callbacks.aclose()
        if self._server is not None:
            await self._server.wait_closed()
        self.gateway.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the server's loop (so it sees a consistent state) and wait for it."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(STOP_TIMEOUT)


def serve(config: SimulatorConfig, *, prepare: Callable[[Simulator], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, in the foreground; print the URL once listening.

    ``prepare`` is called with the simulator before it listens (scripted faults)."""
    simulator = Simulator(config)
    if prepare is not None:
        prepare(simulator)
    stopped = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        simulator.start()
        print(f"Clickatell simulator listening on {simulator.url}", flush=True)
        print(f"WSDL: {simulator.wsdl_url}", flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
