"""Delivery-status callbacks: POST each status a message's ``msg_callback`` level asks for.

Timed like :meth:`Gateway._status` (003 after the first delivery delay, 004/007 after the second),
so a callback and a ``querymsg`` never disagree. Failed posts are retried after short delays.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from batch_sender.simulator.gateway import Batch, Gateway

__all__ = ["CallbackPoster", "levels_for"]

log = logging.getLogger(__name__)

INTERMEDIATE = 1  # level bit: 003
FINAL = 2  # level bit: 004 and every error status
ERROR = 4  # level bit: error statuses (005, 007, 009, 010, 012)
_ERROR_STATUSES = frozenset({"005", "007", "009", "010", "012"})
POST_TIMEOUT = 5.0  # seconds per callback post (waiting for a free connection not included)
MAX_POSTS_IN_FLIGHT = 20  # concurrent posts: a burst must queue here, not time out in the pool


def levels_for(status: str, level: int) -> bool:
    """Whether callback ``level`` (0-7) asks for ``status`` (clickatell-api.md §6.2)."""
    if status == "003":
        return bool(level & INTERMEDIATE)
    if status in _ERROR_STATUSES:
        return bool(level & (FINAL | ERROR))
    if status == "004":
        return bool(level & FINAL)
    return False


class CallbackPoster:
    """Schedules and posts the callbacks of accepted batches on the server's event loop."""

    def __init__(self, gateway: Gateway, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._gateway = gateway
        self._url = url
        self._loop = loop
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._slots = asyncio.Semaphore(MAX_POSTS_IN_FLIGHT)
        self.posted = 0  # callbacks the receiver acknowledged (2xx)
        self.failed = 0  # callbacks given up after every retry

    def schedule(self, batch: Batch) -> None:
        """Plan the batch's callbacks (called on the loop thread, from sendmsg)."""
        first, final = self._gateway.config.delivery_delays
        start = batch.time + batch.deliv_time * 60.0 - time.time()
        if batch.msg_callback & INTERMEDIATE:
            self._at(start + first, batch, final_stage=False)
        if batch.msg_callback & (FINAL | ERROR):
            self._at(start + final, batch, final_stage=True)

    def _at(self, delay: float, batch: Batch, *, final_stage: bool) -> None:
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            task = self._loop.create_task(self._post_batch(batch, final_stage))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        timer = self._loop.call_later(max(0.0, delay), fire)
        self._timers.add(timer)

    async def _post_batch(self, batch: Batch, final_stage: bool) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(POST_TIMEOUT, pool=None),
                limits=httpx.Limits(max_connections=MAX_POSTS_IN_FLIGHT),
            )
        gateway = self._gateway
        posts = []
        for i, to in enumerate(batch.to):
            msg_id = batch.api_message_id(i)
            status = gateway.status_of(msg_id) if gateway.config.keep_messages else None
            if status == "006":
                continue  # stopped with delmsg
            status = gateway.final_status(to) if final_stage else "003"
            if not levels_for(status, batch.msg_callback):
                continue
            form = {
                "api_id": gateway.config.api_id,
                "apiMsgId": msg_id,
                "cliMsgId": batch.client_message_id or "",
                "to": to,
                "timestamp": str(int(time.time())),
                "from": batch.sender or "",
                "status": status,
                "charge": f"{batch.charges[i]:g}",
            }
            for name in gateway.config.callback_omit:
                form.pop(name, None)
            posts.append(self._post(form))
        await asyncio.gather(*posts)

    async def _post(self, form: dict[str, str]) -> None:
        assert self._client is not None
        delays = self._gateway.config.callback_retry_delays
        for attempt in range(len(delays) + 1):
            try:
                async with self._slots:
                    response = await self._client.post(self._url, data=form)
                if response.is_success:
                    self.posted += 1
                    return
            except httpx.HTTPError as exc:
                log.debug("callback post failed: %s", exc)
            if attempt < len(delays):
                await asyncio.sleep(delays[attempt])
        self.failed += 1
        log.warning("gave up posting callback for %s (status %s)", form["apiMsgId"], form["status"])

    async def aclose(self) -> None:
        """Cancel pending callbacks and close the HTTP client."""
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
