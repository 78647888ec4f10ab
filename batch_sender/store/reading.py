"""Reading a campaign back: counts, the census that ends a run, error counts, the results view."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sqlalchemy import (
    func,
    select,
)

from batch_sender.states import STAGED_ONLY, Status
from batch_sender.store import engine as engines
from batch_sender.store.base import StoreBase, _r
from batch_sender.store.records import (
    Census,
)
from batch_sender.store.tables import (
    results_view,
)

log = logging.getLogger(__name__)

RESULTS_FETCH = 2000  # rows fetched per round trip when streaming the results view


class ReadingMixin(StoreBase):
    """Reading a campaign back: counts, the census, error counts, the results view."""

    def counts(self, campaign_id: int) -> dict[Status, int]:
        """Recipients per state (every state present, zeros included)."""
        stmt = (
            select(_r.status, func.count()).where(_r.campaign_id == campaign_id).group_by(_r.status)
        )
        with engines.store_errors("counting recipients", self._url), self._engine.connect() as c:
            found = {Status(status): int(n) for status, n in c.execute(stmt)}
        return {status: found.get(status, 0) for status in Status}

    def census(self, campaign_id: int) -> Census:
        """:meth:`counts`, and the message parts (credits) of every recipient accepted for
        sending, sent or not, in one pass over the campaign."""
        stmt = (
            select(_r.status, func.count(), func.coalesce(func.sum(_r.parts), 0))
            .where(_r.campaign_id == campaign_id)
            .group_by(_r.status)
        )
        with engines.store_errors("counting recipients", self._url), self._engine.connect() as c:
            found = {Status(status): (int(n), int(parts)) for status, n, parts in c.execute(stmt)}
        return Census(
            counts={status: found.get(status, (0, 0))[0] for status in Status},
            parts=sum(parts for status, (_, parts) in found.items() if status not in STAGED_ONLY),
            part_counts={
                status: parts
                for status, (_, parts) in found.items()
                if parts and status not in STAGED_ONLY
            },
        )

    def error_counts(self, campaign_id: int) -> list[tuple[Status, str | None, str | None, int]]:
        """(state, code, description, recipients) of failed and rejected rows, most common
        first: ``rejected`` rows were refused at staging, ``failed`` ones by the gateway."""
        count = func.count().label("n")
        stmt = (
            select(_r.status, _r.error_code, _r.error_description, count)
            .where(
                _r.campaign_id == campaign_id,
                _r.status.in_([Status.FAILED.value, Status.REJECTED.value]),
            )
            .group_by(_r.status, _r.error_code, _r.error_description)
            .order_by(count.desc(), _r.error_code)
        )
        with engines.store_errors("counting errors", self._url), self._engine.connect() as c:
            return [
                (Status(status), code, description, int(n))
                for status, code, description, n in c.execute(stmt)
            ]

    def results(self, campaign_id: int) -> Iterator[dict[str, object]]:
        """The ``results`` view for one campaign in source order, streamed (flat memory)."""
        view = results_view.c
        stmt = select(results_view).where(view.campaign_id == campaign_id).order_by(view.row_no)
        with engines.store_errors("reading results", self._url), self._engine.connect() as conn:
            result = conn.execution_options(yield_per=RESULTS_FETCH).execute(stmt)
            try:
                for row in result.mappings():
                    yield dict(row)
            finally:  # a reader that stops early must not leave an unread server-side cursor
                result.close()
