"""Recording outcomes: each chunk's IDs and errors written back once, and rows released.

Four write paths, one per engine family: SQLite 3.38+ updates from one JSON text, older SQLite
and the drivers use executemany, the rest a CASE update.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    case,
    literal,
    update,
)
from sqlalchemy.sql.dml import Update

from batch_sender.states import Status
from batch_sender.store import engine as engines
from batch_sender.store import inbox
from batch_sender.store.base import (
    _ID_BATCH,
    _SETTLEABLE,
    StoreBase,
    _asynchronous_commit,
    _clip,
    _now,
    _r,
)
from batch_sender.store.queue import _ClaimSql
from batch_sender.store.records import (
    Outcome,
    SentOutcomes,
)
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    ERROR_CODE_LENGTH,
    ERROR_DESCRIPTION_LENGTH,
    UTCDateTime,
    recipients,
)

log = logging.getLogger(__name__)


def _update_by_case(outcomes: Sequence[Outcome], now: datetime) -> Update:
    """One UPDATE writing every outcome of ``outcomes`` (the same rule as ``Store.record``)."""
    ids = [o.recipient_id for o in outcomes]

    def per_row(values: list[str | None]) -> Any:
        return case(dict(zip(ids, values, strict=True)), value=_r.id)

    return (
        update(recipients)
        .where(_r.id.in_(ids), _r.status.in_(_SETTLEABLE))
        .values(
            status=per_row([o.status.value for o in outcomes]),
            api_message_id=per_row(
                [_clip(o.api_message_id, API_MESSAGE_ID_LENGTH) for o in outcomes]
            ),
            error_code=per_row([_clip(o.error_code, ERROR_CODE_LENGTH) for o in outcomes]),
            error_description=per_row(
                [_clip(o.error_description, ERROR_DESCRIPTION_LENGTH) for o in outcomes]
            ),
            updated_at=literal(now, UTCDateTime()),
        )
    )


class OutcomesMixin(StoreBase):
    """Recording outcomes and releasing rows: the end of every chunk."""

    def record(self, outcomes: Sequence[Outcome], *, accepted: Sequence[SentOutcomes] = ()) -> None:
        """Write outcomes in one transaction; only rows still ``sending`` or ``unknown`` change.

        ``accepted``: more outcomes, as whole chunks every recipient of which was accepted.
        """
        if not outcomes and not accepted:
            return
        now = _now()
        with (
            engines.store_errors("recording outcomes", self._url),
            engines.begin_write(self._engine) as conn,
            inbox.applied_on_record(conn, outcomes, accepted),  # receipts that came first
        ):
            _asynchronous_commit(conn)
            sql = _ClaimSql.for_dialect(conn.dialect)
            if accepted and sql.record_sent_json is None:  # only SQLite reads them packed
                outcomes = [*outcomes, *itertools.chain.from_iterable(accepted)]
                accepted = ()
            if conn.dialect.name in ("mysql", "mariadb"):
                # PyMySQL runs an UPDATE executemany as one round trip per row: send one
                # UPDATE … SET col = CASE id WHEN … END per slice instead
                for start in range(0, len(outcomes), _ID_BATCH):
                    conn.execute(_update_by_case(outcomes[start : start + _ID_BATCH], now))
                return
            stamp = sql.timestamp(now)
            rest = outcomes
            if sql.record_sent_json is not None:
                sent: dict[int, str | None] = {}
                rest = []
                for o in outcomes:
                    if (
                        o.status is Status.SENT
                        and o.error_code is None
                        and o.error_description is None
                    ):
                        api_id = o.api_message_id
                        sent[o.recipient_id] = api_id and api_id[:API_MESSAGE_ID_LENGTH]
                    else:
                        rest.append(o)
                # one JSON object of every accepted row: the packed chunks' texts joined
                objects = [p.packed[1:-1] for p in accepted if p.length]
                if sent:
                    objects.append(json.dumps(sent)[1:-1])
                if objects:
                    packed = "{" + ",".join(objects) + "}"
                    conn.exec_driver_sql(sql.record_sent_json, (stamp, packed))
                if not rest:
                    return
            # (a Status is a str; slicing only what may be long keeps this loop cheap)
            values = [
                (
                    o.recipient_id,
                    o.status,
                    o.api_message_id and o.api_message_id[:API_MESSAGE_ID_LENGTH],
                    o.error_code and o.error_code[:ERROR_CODE_LENGTH],
                    o.error_description and o.error_description[:ERROR_DESCRIPTION_LENGTH],
                )
                for o in rest
            ]
            if sql.record_json is not None:
                conn.exec_driver_sql(sql.record_json, (stamp, json.dumps(values)))
            else:
                conn.exec_driver_sql(sql.record, [(*v[1:], stamp, v[0]) for v in values])

    def release(
        self, recipient_ids: Sequence[int], *, from_statuses: Sequence[Status] = (Status.SENDING,)
    ) -> None:
        """Give rows that were never accepted back to the queue (``sending → pending``).

        ``from_statuses`` widens it to ``unknown`` rows the gateway said it never saw.
        """
        if not recipient_ids:
            return
        with (
            engines.store_errors("releasing recipients", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            for start in range(0, len(recipient_ids), _ID_BATCH):
                conn.execute(
                    update(recipients)
                    .where(
                        _r.id.in_(list(recipient_ids[start : start + _ID_BATCH])),
                        _r.status.in_([s.value for s in from_statuses]),
                    )
                    .values(
                        status=Status.PENDING.value,
                        client_message_id=None,
                        claimed_by=None,
                        claimed_at=None,
                        # the claim counted an attempt that never left
                        attempts=case((_r.attempts > 0, _r.attempts - 1), else_=0),
                        updated_at=_now(),
                    )
                )
