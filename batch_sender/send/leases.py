"""Who holds a claim and whether it is still alive: worker identities, liveness, orphans.

A row in ``sending`` carries ``claimed_by`` (the worker that claimed it) and ``claimed_at`` (when
it last renewed its lease: the heartbeat). Settling may touch it only once its claimer is gone.
This module is the one place that decides that.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

__all__ = ["is_live_worker", "is_orphan", "worker_id"]

_live_workers: set[str] = set()  # claimed_by of the Senders running in this process


def worker_id() -> str:
    """Who claims rows: host, process and a per-run token (``claimed_by``)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def started(worker: str) -> None:
    """A Sender of this process is now running under ``worker``."""
    _live_workers.add(worker)


def stopped(worker: str) -> None:
    """The Sender running under ``worker`` has ended."""
    _live_workers.discard(worker)


def is_live_worker(claimed_by: str) -> bool:
    """Whether a Sender of this process is running under ``claimed_by`` right now."""
    return claimed_by in _live_workers


def is_orphan(claimed_by: str | None, claimed_at: datetime | None, *, lease: float) -> bool:
    """Whether a `sending` row's claimer is gone: a dead process on this host, a finished run of
    this process, or a lapsed lease."""
    host, _, rest = (claimed_by or "").partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname()[:30] and pid.isdigit():
        if int(pid) == os.getpid():
            return not is_live_worker(claimed_by or "")
        return not _alive(int(pid))
    if claimed_at is None:
        return True
    if claimed_at.tzinfo is None:
        claimed_at = claimed_at.replace(tzinfo=UTC)
    return datetime.now(UTC) - claimed_at > timedelta(seconds=lease)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
