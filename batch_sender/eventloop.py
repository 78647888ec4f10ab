"""The event loops batch-sender runs: uvloop's where it is installed (the sending process, the
simulator), asyncio's otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["new_loop", "run"]


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to its end on a new loop of this thread (:func:`new_loop`), then close it."""
    loop = new_loop()
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()
