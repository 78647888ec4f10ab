"""Who holds a claim and whether it is still alive: worker identities, liveness, orphans.

A row in ``sending`` carries ``claimed_by`` (the worker that claimed it) and ``claimed_at`` (when
it last renewed its lease: the heartbeat). Settling may touch it only once its claimer is gone.
This module is the one place that decides that.

Liveness comes from the database: a claim is its worker's while its lease (``claimed_at``,
renewed by the worker's heartbeat) has not lapsed. A process id says nothing by itself: two
containers on one host (host network, Kubernetes ``hostNetwork``) share a hostname but not a PID
namespace, and a container's PID 1 comes back as PID 1. The one shortcut: a worker that ran in
*this* kernel boot and *this* PID namespace (both part of its identity) and whose process is
gone — no process has its pid with its start time — is dead now, lease or not, so a re-run after
a ``kill -9`` does not wait a lease. Anything this process cannot prove dead is trusted to its
lease.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

__all__ = ["FENCE", "is_live_worker", "is_orphan", "provably_dead", "renewed", "worker_id"]

_live_workers: set[str] = set()  # claimed_by of the Senders running in this process
_renewed: dict[str, float] = {}  # worker → monotonic time its lease was last renewed
#: share of its lease after which a worker that could not renew it stops sending: two heartbeats
#: (every lease / 3) must have failed, and others take its rows for dead only at 1.0
FENCE = 0.8
_NOWHERE = "-"  # the `place` of a worker whose kernel and PID namespace this process cannot read


def worker_id() -> str:
    """Who claims rows (``claimed_by``, at most 64 characters), unique per process start:
    ``host:pid:start:place:token``, ``start`` the process's start time (clock ticks after
    boot), ``place`` a digest of the kernel boot and PID namespace, ``token`` per run."""
    pid = os.getpid()
    start = _start_time(pid) if _place() != _NOWHERE else None
    return f"{socket.gethostname()[:20]}:{pid}:{start or 0}:{_place()}:{uuid.uuid4().hex[:8]}"


def started(worker: str) -> None:
    """A Sender of this process is now running under ``worker``."""
    _live_workers.add(worker)


def stopped(worker: str) -> None:
    """The Sender running under ``worker`` has ended."""
    _live_workers.discard(worker)


def renewed(worker: str) -> None:
    """``worker``'s lease was just renewed (its heartbeat wrote ``claimed_at``)."""
    _renewed[worker] = time.monotonic()


def forget(worker: str) -> None:
    """``worker`` no longer keeps a lease (its heartbeat has ended)."""
    _renewed.pop(worker, None)


def unrenewed_for(worker: str) -> float | None:
    """Seconds since ``worker``'s lease was last renewed; None if no heartbeat keeps it."""
    last = _renewed.get(worker)
    return None if last is None else time.monotonic() - last


def is_live_worker(claimed_by: str) -> bool:
    """Whether a Sender of this process is running under ``claimed_by`` right now."""
    return claimed_by in _live_workers


def provably_dead(claimed_by: str | None) -> bool:
    """Whether ``claimed_by``'s process is gone for certain (see the module docstring)."""
    parts = (claimed_by or "").split(":")
    if len(parts) != 5 or parts[3] == _NOWHERE or parts[3] != _place():
        return False  # another host, container, or an older identity: only its lease tells
    _, pid, start, _, _ = parts
    if not pid.isdigit() or not start.isdigit():
        return False
    if int(pid) == os.getpid() and int(start) == (_start_time(os.getpid()) or -1):
        return not is_live_worker(claimed_by or "")  # this process: is that Sender running?
    return _start_time(int(pid)) != int(start)  # no such process, or another one with its pid


def is_orphan(claimed_by: str | None, claimed_at: datetime | None, *, lease: float) -> bool:
    """Whether a `sending` row's claimer is gone: its lease lapsed, or it is provably dead."""
    if provably_dead(claimed_by):
        return True
    if claimed_at is None:
        return True
    if claimed_at.tzinfo is None:
        claimed_at = claimed_at.replace(tzinfo=UTC)
    return datetime.now(UTC) - claimed_at > timedelta(seconds=lease)


@functools.cache
def _place() -> str:
    """A digest of this kernel's boot and this process's PID namespace, or ``-`` when /proc
    does not show this namespace's processes (then no pid here can be checked)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        if os.readlink("/proc/self") != str(os.getpid()):
            return _NOWHERE  # a /proc of another PID namespace (unshare without --mount-proc)
    except OSError:
        return _NOWHERE
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:8]


def _start_time(pid: int) -> int | None:
    """Process ``pid``'s start time in clock ticks after boot (/proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 counts from 1 and includes pid and comm
    except (IndexError, ValueError):
        return None
