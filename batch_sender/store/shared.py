"""What workers on several machines share through the database: one send schedule per account
(``reserve_rate``) and named locks (``exclusive``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import (
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from batch_sender.store import engine as engines
from batch_sender.store.base import _DB_EPOCH, _SERVER_ENGINES, StoreBase, _now
from batch_sender.store.tables import (
    rate_limits,
)

log = logging.getLogger(__name__)

_LOCK_NAME_LENGTH = 64  # MariaDB/MySQL's limit on GET_LOCK names


class SharedMixin(StoreBase):
    """What workers on several machines share through the database: one send schedule per account"""

    def reserve_rate(self, account: str, units: float, *, rate: float) -> float:
        """Reserve ``units`` of ``account``'s shared schedule; seconds until they may start.

        The schedule is one row (``rate_limits``) locked for the reservation: the slots start at
        the later of "now" and the end of every earlier reservation, on the database's clock, so
        workers on machines with different clocks still share one timeline. The caller sends its
        units evenly over ``[delay, delay + units / rate)`` from the moment this returns.
        """
        if rate <= 0 or units <= 0:
            raise ValueError("rate and units must be positive")
        account = account[:200]
        with engines.store_errors("reserving send slots", self._url):
            self._ensure_rate_row(account, rate)
            with engines.begin_write(self._engine) as conn:
                next_at = conn.execute(
                    select(rate_limits.c.next_at)
                    .where(rate_limits.c.account == account)
                    .with_for_update()
                ).scalar_one()
                now = float(conn.exec_driver_sql(_DB_EPOCH[conn.dialect.name]).scalar_one())
                start = max(now, float(next_at))
                conn.execute(
                    update(rate_limits)
                    .where(rate_limits.c.account == account)
                    .values(next_at=start + units / rate, rate=rate, updated_at=_now())
                )
        return start - now

    def _ensure_rate_row(self, account: str, rate: float) -> None:
        """Create ``account``'s schedule row if it is missing (a concurrent creator wins)."""
        with self._engine.connect() as conn:
            exists = conn.execute(
                select(rate_limits.c.account).where(rate_limits.c.account == account)
            ).first()
        if exists is not None:
            return
        try:
            with engines.begin_write(self._engine) as conn:
                conn.execute(
                    insert(rate_limits).values(
                        account=account, next_at=0.0, rate=rate, updated_at=_now()
                    )
                )
        except IntegrityError:
            pass  # another worker created it first

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Try to take a database-wide lock called ``name`` without waiting; yield whether held.

        For work that one worker at a time should do, such as settling the orphans of a
        campaign: a worker that does not get the lock skips, another is doing it. PostgreSQL uses
        an advisory lock, MariaDB/MySQL ``GET_LOCK`` (both per schema/database and released if
        the process dies); SQLite, one machine's store, always yields True.
        """
        dialect = self._engine.dialect.name
        if dialect not in _SERVER_ENGINES:
            yield True
            return
        if dialect == "postgresql":
            key = "hashtext(current_schema() || '.' || :name)"
            take, give = f"SELECT pg_try_advisory_lock({key})", f"SELECT pg_advisory_unlock({key})"
        else:
            key = f"LEFT(CONCAT(COALESCE(DATABASE(), ''), '.', :name), {_LOCK_NAME_LENGTH})"
            take, give = f"SELECT GET_LOCK({key}, 0)", f"SELECT RELEASE_LOCK({key})"
        with engines.store_errors(f"taking lock {name!r}", self._url):
            conn = self._engine.connect()
        try:
            with engines.store_errors(f"taking lock {name!r}", self._url):
                held = bool(conn.execute(text(take), {"name": name}).scalar())
                conn.commit()  # a session lock: it outlives the transaction, which must not idle
            try:
                yield held
            finally:
                if held:
                    with engines.store_errors(f"releasing lock {name!r}", self._url):
                        conn.execute(text(give), {"name": name})
                        conn.commit()
        except BaseException:
            conn.invalidate()  # never hand a connection that may hold the lock back to the pool
            raise
        finally:
            conn.close()
