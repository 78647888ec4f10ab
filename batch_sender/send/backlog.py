"""What a run does when its results database stops taking writes: hold, journal, retry.

The coordinator writes each batch of finished chunks through :class:`Backlog`. While the
database takes them, that is all it does. When a write (or a claim) fails with ``StoreError``
— a full disk, a database restarting, a lock held too long — the backlog:

* keeps the batch in memory and appends it to this run's journal (``store.journal``, fsynced),
  so that from then on the outcomes survive the process;
* tells the coordinator to claim nothing new (chunks already handed to couriers still finish,
  and their outcomes are held the same way);
* retries the write with backoff (:data:`FIRST_DELAY` doubling to :data:`MAX_DELAY`) for at
  most ``retry_for`` seconds from the first failure (``--db-retry``). Once a write goes
  through, the journal is removed and the run goes on as if nothing had happened;
* past that, :meth:`expired` says so and the coordinator stops the run: the journal stays,
  and the next command that opens the database applies it first (``Store.open``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from batch_sender.config import DEFAULT_DB_RETRY
from batch_sender.errors import StoreError
from batch_sender.store import Outcome, SentOutcomes, Store
from batch_sender.store import requests as store_requests
from batch_sender.store.journal import Entry, Journal

__all__ = ["DEFAULT_DB_RETRY", "Backlog", "Batch"]

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5  # seconds before the first retry; doubled after each failure
MAX_DELAY = 5.0


@dataclass(slots=True)
class Batch:
    """Finished chunks to write in one transaction, and the same per request for the journal."""

    outcomes: list[Outcome] = field(default_factory=list)
    accepted: list[SentOutcomes] = field(default_factory=list)  # whole chunks accepted
    release: list[int] = field(default_factory=list)  # never accepted: back to pending
    entries: list[Entry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.accepted or self.release)

    def rows(self) -> int:
        return len(self.outcomes) + sum(len(a) for a in self.accepted) + len(self.release)

    def extend(self, other: Batch) -> None:
        self.outcomes.extend(other.outcomes)
        self.accepted.extend(other.accepted)
        self.release.extend(other.release)
        self.entries.extend(other.entries)


def write(store: Store, batch: Batch) -> None:
    """Record a batch: outcomes and releases in ONE transaction when it has both."""
    if batch.release and (batch.outcomes or batch.accepted):
        # one transaction: a crash between recording and releasing would leave the released
        # rows `sending` under a climsgid the gateway knows (settling: `unknown`)
        store_requests.finish_chunks(
            store, batch.outcomes, accepted=batch.accepted, release=batch.release
        )
    elif batch.outcomes or batch.accepted:
        store.record(batch.outcomes, accepted=batch.accepted)
    elif batch.release:
        store.release(batch.release)


def _outage(exc: StoreError) -> bool:
    """Whether ``exc`` came from the database or its driver (worth retrying), not from us."""
    cause = exc.__cause__
    return cause is None or isinstance(cause, (DBAPIError, sqlite3.Error, OSError))


class Backlog:
    """The outcomes a run could not record yet, and how long it has been trying."""

    def __init__(
        self,
        store: Store,
        journal: Journal,
        *,
        retry_for: float = DEFAULT_DB_RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._journal = journal
        self._retry_for = retry_for
        self._clock = clock
        self._held = Batch()
        self._since: float | None = None  # when the current outage began
        self._next_try = 0.0
        self._delay = FIRST_DELAY
        self._unwritten: list[Entry] = []  # held, but the journal could not take them yet
        self.error: StoreError | None = None  # the latest failure

    @property
    def retry_for(self) -> float:
        return self._retry_for

    @property
    def failing(self) -> bool:
        return self._since is not None

    @property
    def held(self) -> int:
        """Rows whose outcome (or release) is held, not yet recorded."""
        return self._held.rows()

    @property
    def journal(self) -> Path | None:
        return self._journal.path

    @property
    def unjournaled(self) -> int:
        """Rows held that the journal could not take either (in memory only)."""
        return sum(len(o) + len(r) for _, o, r in self._unwritten)

    def write(self, batch: Batch) -> None:
        """Record ``batch`` now, or hold it (journaled) while the database fails."""
        if not batch:
            return
        if not self.failing:
            try:
                write(self._store, batch)
                return
            except StoreError as exc:
                self.failed(exc)
        self._hold(batch)

    def failed(self, exc: StoreError) -> None:
        """A write or a claim failed: the outage begins now, or goes on. A failure that no
        database outage explains (SQLAlchemy refusing a statement: a bug) is raised again."""
        if not _outage(exc):
            raise exc
        now = self._clock()
        self.error = exc
        if self._since is None:
            self._since = now
            self._delay = FIRST_DELAY
            log.error(
                "%s; claiming nothing new, holding every outcome and retrying for up to %.0fs "
                "(--db-retry)",
                exc,
                self._retry_for,
            )
        else:
            log.debug("the results database still fails: %s", exc)
            self._delay = min(self._delay * 2, MAX_DELAY)
        self._next_try = now + self._delay

    def recovered(self) -> None:
        """A claim or a write went through: the outage (if any) is over."""
        if self._since is not None and not self._held:
            log.warning(
                "the results database is back after %.1fs: sending resumes",
                self._clock() - self._since,
            )
            self._since = None
            self.error = None

    def due(self) -> bool:
        return self._clock() >= self._next_try

    def wait_time(self) -> float:
        return max(0.0, self._next_try - self._clock())

    def expired(self) -> bool:
        return self._since is not None and self._clock() - self._since >= self._retry_for

    def may_claim(self) -> bool:
        """Claim only with a database that works: during an outage, a claim is the probe
        when nothing is held (and its turn has come)."""
        return not self.failing or (not self._held and self.due())

    def flush(self, *, force: bool = False) -> bool:
        """Retry the held writes if their turn has come (or ``force``); True once none is held."""
        if not self._held:
            return True
        if not force and not self.due():
            return False
        try:
            write(self._store, self._held)
        except StoreError as exc:
            self.failed(exc)
            return False
        rows = self._held.rows()
        self._held = Batch()
        self._unwritten = []
        try:
            self._journal.discard()
        except OSError as exc:  # applying it again later skips every row it holds
            log.warning("cannot remove the journal: %s", exc)
        log.warning("recorded the %d held outcomes", rows)
        self.recovered()
        return True

    def close(self) -> None:
        """The run is over: keep the journal (if any) for the next command."""
        self._journal.close()

    def _hold(self, batch: Batch) -> None:
        self._held.extend(batch)
        entries = [*self._unwritten, *batch.entries]
        try:
            self._journal.write(entries)
            self._unwritten = []
        except OSError as exc:  # tried again with the next batch
            self._unwritten = entries
            log.error(
                "cannot write the journal either (%s): %d outcomes held in memory only",
                exc,
                self.unjournaled,
            )
