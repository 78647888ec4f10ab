"""Campaign rows: find, list, create under a unique name, set the lifecycle status."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from batch_sender.errors import StoreError
from batch_sender.states import ENDED, CampaignStatus
from batch_sender.store import engine as engines
from batch_sender.store.base import StoreBase, _campaign, _now
from batch_sender.store.records import (
    Campaign,
)
from batch_sender.store.tables import (
    CAMPAIGN_STATUSES,
    UTCDateTime,
    campaigns,
)

log = logging.getLogger(__name__)


class _NameTaken(Exception):
    """Another process committed a campaign of this name while we were staging it."""


class CampaignsMixin(StoreBase):
    """Campaign rows: find, list, create under a unique name, set the lifecycle status."""

    def campaign(self, name: str) -> Campaign | None:
        """The campaign called ``name``, or None."""
        with engines.store_errors("reading a campaign", self._url), self._engine.connect() as conn:
            return self._campaign_where(conn, campaigns.c.name == name)

    def campaigns(self) -> list[Campaign]:
        """Every campaign, oldest first."""
        with engines.store_errors("listing campaigns", self._url), self._engine.connect() as conn:
            rows = conn.execute(select(campaigns).order_by(campaigns.c.id))
            return [_campaign(row) for row in rows]

    def set_status(self, campaign_id: int, status: str) -> None:
        """Move a campaign to ``status``, stamping started_at (first run) and finished_at."""
        if status not in CAMPAIGN_STATUSES:
            raise ValueError(f"unknown campaign status {status!r}")
        now = literal(_now(), UTCDateTime())
        values: dict[str, Any] = {"status": status}
        if status == CampaignStatus.RUNNING:
            values["started_at"] = func.coalesce(campaigns.c.started_at, now)
            values["finished_at"] = None
        elif status in ENDED:
            values["finished_at"] = now
        with (
            engines.store_errors("updating a campaign", self._url),
            engines.begin_write(self._engine) as conn,
        ):
            done = conn.execute(
                update(campaigns).where(campaigns.c.id == campaign_id).values(**values)
            )
        if done.rowcount == 0:
            raise StoreError(f"no campaign with id {campaign_id}")

    def _campaign_where(self, conn: Connection, condition: Any) -> Campaign | None:
        row = conn.execute(select(campaigns).where(condition)).first()
        return None if row is None else _campaign(row)

    def _insert_campaign(
        self,
        conn: Connection,
        name: str,
        source: str,
        fingerprint: str,
        options: dict[str, object],
    ) -> int:
        """Insert the campaign row (``staging``); a concurrent winner raises ``_NameTaken``."""
        try:
            result = conn.execute(
                insert(campaigns).values(
                    name=name,
                    source=source,
                    fingerprint=fingerprint,
                    options=json.dumps(options, sort_keys=True, default=str),
                    status=CampaignStatus.STAGING,
                    total=0,
                    created_at=_now(),
                )
            )
        except IntegrityError as exc:
            raise _NameTaken(name) from exc
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])
