"""The recipient queue: claim chunks (``pending → sending``), record outcomes, release, leases.

PostgreSQL and MariaDB claim with ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite serialises writers
with ``BEGIN IMMEDIATE`` and claims through one prepared text (``_ClaimSql``).
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Dialect

from batch_sender.errors import StoreError
from batch_sender.states import Status
from batch_sender.store import claim_limit
from batch_sender.store import engine as engines
from batch_sender.store.base import (
    _ID_BATCH,
    StoreBase,
    _asynchronous_commit,
    _deadlocked,
    _Message,
    _now,
    _r,
)
from batch_sender.store.records import (
    Chunk,
    ChunkRecipient,
    InFlight,
    PackedRecipients,
)
from batch_sender.store.tables import (
    CLIENT_MESSAGE_ID_LENGTH,
    UTCDateTime,
    recipients,
)

log = logging.getLogger(__name__)

#: UPDATE … FROM (3.33) and the ->> operator (3.38); older SQLite uses executemany
_SQLITE_JSON_UPDATE = (3, 38, 0)

#: a claim whose chunks hold fewer recipients than this on average writes them in one UPDATE
SMALL_CHUNKS = 8
#: messages rows a store keeps for its claims (``_messages_of``). Claims take pending rows in
#: message order, so a message's recipients come in consecutive claims and only the latest
#: messages are worth keeping; distinct texts bring new ones with every claim and reuse none.
#: Sized by staging's digest map (100,000) it held ~30 MB of message texts in the run's process
#: for nothing. More than one claim's worth (MAX_CONCURRENCY × the queue depth, 4,096 chunks),
#: so that a claim's own messages always fit.
CLAIM_MESSAGE_CACHE_SIZE = 8192
CLAIM_DEADLOCK_RETRIES = 3  # a claim that lost a deadlock is rolled back whole and run again


def _checked(client_message_id: str) -> str:
    if len(client_message_id) > CLIENT_MESSAGE_ID_LENGTH:
        raise ValueError(f"client_message_id longer than {CLIENT_MESSAGE_ID_LENGTH}")
    return client_message_id


def _packed_messages(query: Select[Any], count: int) -> Select[Any]:
    """``(message_id, "id,id,…", "msisdn,msisdn,…")`` per message among the rows of ``query``
    (id, msisdn, message_id), in message order: the first ``count`` messages, as each gives at
    least one chunk and a claim takes at most ``count``. (Splitting and joining plain texts
    costs the coordinator a fraction of what JSON did.)"""
    found = query.subquery()
    return (
        select(
            found.c.message_id,
            func.group_concat(found.c.id, ","),
            func.group_concat(found.c.msisdn, ","),
        )
        .group_by(found.c.message_id)
        .order_by(found.c.message_id)
        .limit(count)
    )


class _ClaimSql:
    """The queue's hot statements as driver SQL, built once per dialect.

    Claiming and recording run once per request; going through the driver directly (with the
    one timestamp converted once) costs a fraction of building Core constructs every time.
    """

    _cache: dict[str, _ClaimSql] = {}

    def __init__(self, dialect: Dialect) -> None:
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._to_db = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        self._claims: dict[int, str] = {}
        m = self.mark
        self.record = (
            f"UPDATE recipients SET status = {m}, api_message_id = {m}, error_code = {m}, "
            f"error_description = {m}, updated_at = {m} "
            f"WHERE id = {m} AND status IN ('sending', 'unknown')"
        )

        # SQLite: claim and record in one statement each, the rows passed as one JSON text
        # (json_each). Each statement is one GIL hand-off, where an executemany or a fetch
        # hands the GIL over once per row and then waits for the sending threads to give it
        # back: that wait, not SQLite, was most of the coordinator's time.
        self.record_json: str | None = None
        self.record_sent_json: str | None = None
        self.claim_packed: str | None = None
        self.claim_many_packed: str | None = None
        self.select_packed = (  # _packed_messages of the pending rows (campaign_id, rows, messages)
            "SELECT message_id, group_concat(id, ','), group_concat(msisdn, ',') FROM ("
            "SELECT id, msisdn, message_id FROM recipients "
            "WHERE campaign_id = ? AND status = 'pending' ORDER BY message_id, id LIMIT ?"
            ") GROUP BY message_id ORDER BY message_id LIMIT ?"
        )
        if dialect.name == "sqlite" and sqlite3.sqlite_version_info >= _SQLITE_JSON_UPDATE:
            # (client_message_id, worker, claimed_at, updated_at, JSON [id, ...])
            self.claim_packed = (
                "UPDATE recipients SET status = 'sending', client_message_id = ?, "
                "claimed_by = ?, claimed_at = ?, attempts = attempts + 1, updated_at = ? "
                "WHERE id IN (SELECT value FROM json_each(?))"
            )
            # (worker, claimed_at, updated_at, JSON {client_message_id: [id, ...], ...})
            self.claim_many_packed = (
                "UPDATE recipients SET status = 'sending', client_message_id = c.key, "
                "claimed_by = ?, claimed_at = ?, attempts = attempts + 1, updated_at = ? "
                "FROM json_each(?) AS c, json_each(c.value) AS i WHERE recipients.id = i.value"
            )
            # (updated_at, JSON {"id": api_message_id, ...}): the sent rows, nearly all of
            # them, with one value each to pull out of the JSON (3.0 -> 1.9 µs a row)
            self.record_sent_json = (
                "UPDATE recipients SET status = 'sent', api_message_id = j.value, "
                "error_code = NULL, error_description = NULL, updated_at = ? "
                "FROM json_each(?) AS j WHERE recipients.id = j.key "
                "AND recipients.status IN ('sending', 'unknown')"
            )
            # (updated_at, JSON [[id, status, api_message_id, code, description], ...])
            self.record_json = (
                "UPDATE recipients SET status = j.value ->> 1, api_message_id = j.value ->> 2, "
                "error_code = j.value ->> 3, error_description = j.value ->> 4, updated_at = ? "
                "FROM json_each(?) AS j WHERE recipients.id = j.value ->> 0 "
                "AND recipients.status IN ('sending', 'unknown')"
            )

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _ClaimSql:
        key = f"{dialect.name}+{dialect.driver}"
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(dialect)
        return found

    def timestamp(self, value: datetime) -> Any:
        return value if self._to_db is None else self._to_db(value)

    def claim_values(self, n: int) -> str:
        """PostgreSQL: UPDATE claiming ``n`` rows, each with its own client message ID:
        (worker, claimed_at, updated_at, id, client_message_id, id, client_message_id, …)."""
        key = -n
        sql = self._claims.get(key)
        if sql is None:
            m = self.mark
            values = ", ".join([f"({m}::bigint, {m}::varchar)"] * n)
            sql = self._claims[key] = (
                "UPDATE recipients AS r SET status = 'sending', client_message_id = v.cmid, "
                f"claimed_by = {m}, claimed_at = {m}, attempts = r.attempts + 1, "
                f"updated_at = {m} FROM (VALUES {values}) AS v (id, cmid) WHERE r.id = v.id"
            )
        return sql

    def claim(self, n: int) -> str:
        """UPDATE claiming ``n`` ids: (client_message_id, worker, claimed_at, updated_at, *ids)."""
        sql = self._claims.get(n)
        if sql is None:
            m = self.mark
            sql = self._claims[n] = (
                f"UPDATE recipients SET status = 'sending', client_message_id = {m}, "
                f"claimed_by = {m}, claimed_at = {m}, attempts = attempts + 1, "
                f"updated_at = {m} WHERE id IN ({', '.join([m] * n)})"
            )
        return sql


class QueueMixin(StoreBase):
    """The recipient queue: claim chunks, record outcomes, release, leases."""

    def claim_chunk(
        self, campaign_id: int, *, size: int, client_message_id: str, worker: str
    ) -> Chunk | None:
        """Claim up to ``size`` pending recipients sharing one payload, or None if none is left.

        The claim is committed before this returns: the rows are ``sending``, stamped with
        ``client_message_id`` and ``worker``, and no other claimer can get them.
        """
        ids = iter((client_message_id,))
        chunks = self.claim_chunks(
            campaign_id, size=size, count=1, worker=worker, new_id=lambda: next(ids)
        )
        return chunks[0] if chunks else None

    def claim_chunks(
        self,
        campaign_id: int,
        *,
        size: int,
        count: int,
        worker: str,
        new_id: Callable[[], str],
    ) -> list[Chunk]:
        """Claim up to ``count`` chunks of up to ``size`` recipients each, in one transaction.

        Each chunk shares one payload and gets its own client message ID from ``new_id``. One
        SELECT (``FOR UPDATE SKIP LOCKED`` on PostgreSQL/MariaDB) finds the rows, one UPDATE per
        chunk claims them, one commit makes every claim durable before any request leaves. An
        empty list means nothing is pending (or everything pending is locked by other workers).
        """
        extra = None if self.before_claim is None else self.before_claim(campaign_id)
        for attempt in itertools.count(1):
            try:
                return self._claim_once(campaign_id, extra, size, count, worker, new_id)
            except StoreError as exc:
                if attempt > CLAIM_DEADLOCK_RETRIES or not _deadlocked(exc.__cause__):
                    raise
                log.info("a claim deadlocked with another worker's; claiming again")
        raise AssertionError("unreachable")  # pragma: no cover

    def _claim_once(
        self,
        campaign_id: int,
        extra: ColumnElement[bool] | None,
        size: int,
        count: int,
        worker: str,
        new_id: Callable[[], str],
    ) -> list[Chunk]:
        """One claiming transaction (see :meth:`claim_chunks`); ``extra``: a condition the
        pending rows must meet as well (a send window), if any."""
        claimed: list[tuple[str, int, Sequence[ChunkRecipient]]] = []
        plain = extra is None
        with (
            engines.store_errors("claiming recipients", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            sql = _ClaimSql.for_dialect(conn.dialect)

            def query(limit: int) -> Select[Any]:  # (built only where it is run)
                pending: tuple[ColumnElement[bool], ...] = (
                    _r.campaign_id == campaign_id,
                    # a literal, not a parameter: SQLite uses its partial index of pending rows
                    # only when the statement itself says status = 'pending' (revision 0006)
                    _r.status == literal(Status.PENDING.value, literal_execute=True),
                )
                if extra is not None:
                    pending = (*pending, extra)
                return (
                    select(_r.id, _r.msisdn, _r.message_id)
                    .where(*pending)
                    .order_by(_r.message_id, _r.id)
                    .limit(limit)
                )

            now = sql.timestamp(_now())
            worker = worker[:64]
            limit = claim_limit.limit(self._rows_per_message.get(campaign_id), size, count)
            if sql.claim_packed is not None:
                # SQLite: one row per message, its ids and numbers packed as texts by the query
                # (not one fetch per row, each a GIL hand-off); each chunk's slices go to the
                # UPDATE and to the courier as texts, made into recipients only where it is sent
                # one message more than it chunks, to learn what the rows held (claim_limit)
                if plain:  # the statement as text: building and caching Core's cost 5%
                    packed = conn.exec_driver_sql(
                        sql.select_packed, (campaign_id, limit, count + 1)
                    ).all()
                else:
                    packed = conn.execute(_packed_messages(query(limit), count + 1)).all()
                parts: list[str] = []  # each chunk's ids, "id,id,…"
                claimed_rows = 0
                selected = 0
                for message_id, id_text, number_text in packed:
                    ids, numbers = id_text.split(","), number_text.split(",")
                    selected += len(ids)
                    for start in range(0, len(ids), size):
                        if len(claimed) == count:
                            break
                        part = ",".join(ids[start : start + size])
                        client_message_id = _checked(new_id())
                        recipients = PackedRecipients(part, ",".join(numbers[start : start + size]))
                        claimed.append((client_message_id, message_id, recipients))
                        parts.append(part)
                        claimed_rows += min(size, len(ids) - start)
                if packed:
                    self._rows_per_message[campaign_id] = claim_limit.per_message_of(
                        selected, len(packed), size, limit
                    )
                many = sql.claim_many_packed
                small = len(claimed) > 1 and claimed_rows < SMALL_CHUNKS * len(claimed)
                if many is not None and small:
                    # many small chunks (distinct texts: one recipient each): one UPDATE for
                    # all of them, {client_message_id: [id, …], …} (raw sqlite3, 32 chunks of
                    # one: 17 → 5 µs a recipient); big chunks stay one UPDATE each, which is
                    # cheaper for them (1.0–1.2 against 1.6–3.0 µs a recipient)
                    packed_claims = ",".join(
                        f"{json.dumps(cmid)}:[{part}]"
                        for (cmid, _, _), part in zip(claimed, parts, strict=True)
                    )
                    conn.exec_driver_sql(many, (worker, now, now, "{" + packed_claims + "}"))
                else:
                    for (client_message_id, _, _), part in zip(claimed, parts, strict=True):
                        conn.exec_driver_sql(
                            sql.claim_packed, (client_message_id, worker, now, now, f"[{part}]")
                        )
            else:
                rows = conn.execute(query(limit).with_for_update(skip_locked=True)).all()
                for message_id, group in itertools.groupby(rows, key=lambda row: row.message_id):
                    members = [ChunkRecipient(row.id, row.msisdn) for row in group]
                    for start in range(0, len(members), size):
                        if len(claimed) < count:
                            client_message_id = _checked(new_id())
                            claimed.append(
                                (
                                    client_message_id,
                                    message_id,
                                    tuple(members[start : start + size]),
                                )
                            )
                claimed_rows = sum(len(m) for _, _, m in claimed)
                if rows:
                    self._rows_per_message[campaign_id] = claim_limit.per_message(rows, size, limit)
                if (
                    conn.dialect.name == "postgresql"
                    and len(claimed) > 1
                    and claimed_rows < SMALL_CHUNKS * len(claimed)
                ):
                    # many small chunks (distinct texts: one recipient each): one UPDATE … FROM
                    # (VALUES (id, client_message_id), …) for all of them, not a round trip per
                    # chunk (16 one-row chunks: 16 statements → 1)
                    pairs = [(r.id, cmid) for cmid, _, members in claimed for r in members]
                    for start in range(0, len(pairs), _ID_BATCH):
                        some = pairs[start : start + _ID_BATCH]
                        conn.exec_driver_sql(
                            sql.claim_values(len(some)),
                            (worker, now, now, *itertools.chain.from_iterable(some)),
                        )
                else:
                    for client_message_id, _, chunk_members in claimed:
                        conn.exec_driver_sql(
                            sql.claim(len(chunk_members)),
                            (client_message_id, worker, now, now, *(r.id for r in chunk_members)),
                        )
            if not claimed:
                return []
            payloads = self._messages_of(conn, {m for _, m, _ in claimed})
        return [
            Chunk(
                campaign_id=campaign_id,
                client_message_id=client_message_id,
                message_id=message_id,
                wire_text=payloads[message_id].wire_text,
                unicode=payloads[message_id].unicode,
                parts=payloads[message_id].parts,
                recipients=members,
            )
            for client_message_id, message_id, members in claimed
        ]

    def in_flight(
        self,
        campaign_id: int,
        *,
        statuses: Sequence[Status] = (Status.SENDING,),
        older_than: datetime | None = None,
    ) -> list[InFlight]:
        """Rows in ``statuses`` (claimed before ``older_than``), one group per request."""
        stmt = (
            select(_r.id, _r.msisdn, _r.client_message_id, _r.status, _r.claimed_by, _r.claimed_at)
            .where(_r.campaign_id == campaign_id, _r.status.in_([s.value for s in statuses]))
            .order_by(_r.client_message_id, _r.status, _r.id)
        )
        if older_than is not None:
            stmt = stmt.where(_r.claimed_at < literal(older_than, UTCDateTime()))
        with engines.store_errors("reading in-flight rows", self._url), self._engine.connect() as c:
            rows = c.execute(stmt).all()
        groups = []
        for (key, status), group in itertools.groupby(
            rows, key=lambda row: (row.client_message_id, row.status)
        ):
            members = list(group)
            groups.append(
                InFlight(
                    client_message_id=key or "",
                    status=Status(status),
                    claimed_by=members[0].claimed_by,
                    claimed_at=members[0].claimed_at,
                    recipients=tuple(ChunkRecipient(row.id, row.msisdn) for row in members),
                )
            )
        return groups

    def request_size(self, campaign_id: int, client_message_id: str) -> int:
        """How many rows the request ``client_message_id`` carried (settled or not)."""
        stmt = select(func.count()).where(
            _r.campaign_id == campaign_id, _r.client_message_id == client_message_id
        )
        with engines.store_errors("reading a request", self._url), self._engine.connect() as c:
            return int(c.execute(stmt).scalar_one())

    def touch_claims(self, campaign_id: int, worker: str) -> int:
        """Renew the lease on ``worker``'s ``sending`` rows (``claimed_at`` = now); how many.

        Rows another transaction holds (being recorded right now) are skipped rather than waited
        for, so a heartbeat never deadlocks with its own worker's writes.
        """
        mine = (
            _r.campaign_id == campaign_id,
            _r.status == Status.SENDING.value,
            _r.claimed_by == worker[:64],
        )
        touched = 0
        with (
            engines.store_errors("renewing claims", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            _asynchronous_commit(conn)  # a lost heartbeat only shortens a lease
            ids = (
                conn.execute(select(_r.id).where(*mine).with_for_update(skip_locked=True))
                .scalars()
                .all()
            )
            now = _now()
            for start in range(0, len(ids), _ID_BATCH):
                done = conn.execute(
                    update(recipients)
                    .where(_r.id.in_(ids[start : start + _ID_BATCH]), *mine)
                    .values(claimed_at=now)
                )
                touched += done.rowcount
        return touched

    def requeue_unknown(self, campaign_id: int) -> int:
        """Put ``unknown`` rows back to ``pending`` (``--resend-unknown``); how many moved."""
        with (
            engines.store_errors("requeueing unknown rows", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            done = conn.execute(
                update(recipients)
                .where(_r.campaign_id == campaign_id, _r.status == Status.UNKNOWN.value)
                .values(
                    status=Status.PENDING.value,
                    client_message_id=None,
                    claimed_by=None,
                    claimed_at=None,
                    updated_at=_now(),
                )
            )
        return done.rowcount

    def _messages_of(self, conn: Connection, message_ids: set[int]) -> dict[int, _Message]:
        """The messages rows of ``message_ids``: from the cache, the rest in one SELECT per
        slice (distinct texts make every claim's messages new: one query per chunk had been
        half the coordinator's time)."""
        found: dict[int, _Message] = {}
        missing: list[int] = []
        for message_id in message_ids:
            cached = self._messages.get(message_id)
            if cached is None:
                missing.append(message_id)
            else:
                found[message_id] = cached
        if not missing:
            return found
        if len(self._messages) + len(missing) > CLAIM_MESSAGE_CACHE_SIZE:
            self._messages.clear()
        mark = _ClaimSql.for_dialect(conn.dialect).mark
        for start in range(0, len(missing), _ID_BATCH):
            some = missing[start : start + _ID_BATCH]
            rows = conn.exec_driver_sql(
                "SELECT id, wire_text, unicode, parts FROM messages "
                f"WHERE id IN ({', '.join([mark] * len(some))})",
                tuple(some),
            ).all()
            for message_id, wire_text, unicode, parts in rows:
                message = _Message(wire_text, bool(unicode), int(parts))
                found[message_id] = self._messages[message_id] = message
        absent = set(missing) - found.keys()
        if absent:
            raise StoreError(f"no messages row {min(absent)} for claimed recipients")
        return found
