"""Finding the recipient row of each delivery report, without scanning ``recipients``.

By recipient id (``querymsg`` of a tracked row), by client message ID + number (the
``(campaign_id, client_message_id)`` index), or by API message ID among the rows of the number
(the ``(campaign_id, msisdn)`` index); each lookup also reads the statuses recorded so far for
the rows it locks (``Seen``), so applying them costs no further read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    bindparam,
    select,
)
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from batch_sender.store.reports import DeliveryReport
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    CLIENT_MESSAGE_ID_LENGTH,
    MSISDN_LENGTH,
    campaigns,
    delivery_events,
    recipients,
)

__all__ = ["CampaignIds", "Seen", "load_rows", "match"]

_r = recipients.c
_e = delivery_events.c


# Statements of the hot path (one callback after another), built once.
_FOUND = (
    _r.id,
    _r.status,
    _r.api_message_id,
    _r.delivery_status,
    _r.delivered_at,
    _r.charge,
    _r.error_code,
    _r.error_description,
)
_ROW = (*_FOUND, _r.client_message_id, _r.msisdn)


class Seen:
    """The statuses recorded so far (``delivery_events``) of the rows a batch loaded with them."""

    __slots__ = ("covered", "statuses")

    def __init__(self) -> None:
        self.covered: set[int] = set()  # recipient ids whose every recorded status is in statuses
        self.statuses: set[tuple[int, str]] = set()  # (recipient id, status)


_SEEN_COLUMN = _e.status.label("seen_status")
_WITH_EVENTS = recipients.outerjoin(delivery_events, _e.recipient_id == _r.id)


def _with_events(condition: ColumnElement[bool]) -> Select[Any]:
    """Rows matching ``condition`` with their recorded statuses (an outer join with
    ``delivery_events``; the lock on the recipient rows, ``FOR UPDATE OF`` where the engine has
    it): one round trip fewer per batch than reading the statuses after."""
    return (
        select(*_ROW, _SEEN_COLUMN)
        .select_from(_WITH_EVENTS)
        .where(condition)
        .order_by(_r.id)
        .with_for_update(of=recipients)
    )


# built once (constructing and keying a new statement per batch was a tenth of SQLite's CPU);
# the campaign ids as values, not a subquery: the indexes lead with campaign_id, and with a
# subquery MariaDB read every row of the campaign and PostgreSQL the whole cliMsgId index
_CAMPAIGN_IDS: BindParameter[int] = bindparam("b_cids", expanding=True)
_BY_CLI = _with_events(
    and_(
        _r.campaign_id.in_(_CAMPAIGN_IDS),
        _r.client_message_id.in_(bindparam("b_clis", expanding=True)),
        _r.msisdn.in_(bindparam("b_tos", expanding=True)),
    )
)
_BY_NUMBER = _with_events(
    and_(_r.campaign_id.in_(_CAMPAIGN_IDS), _r.msisdn.in_(bindparam("b_tos", expanding=True)))
)
_BY_ID = _with_events(_r.id.in_(bindparam("b_rids", expanding=True)))


def load_rows(
    conn: Connection,
    condition: ColumnElement[bool] | Select[Any],
    seen: Seen | None = None,
    params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Recipient rows as mutable dicts, locked for this transaction, lowest id first.

    ``condition``: a WHERE clause, or with ``seen`` one of the statements above (``params``
    its values); their recorded statuses are added to ``seen``.
    """
    if seen is None:
        assert not isinstance(condition, Select)
        stmt = select(*_ROW).where(condition).order_by(_r.id).with_for_update()
        return [dict(row) for row in conn.execute(stmt).mappings()]
    joined = condition if isinstance(condition, Select) else _with_events(condition)
    rows: dict[int, dict[str, Any]] = {}
    for found in conn.execute(joined, params or {}).mappings():
        rid = found["id"]
        if rid not in rows:
            row = dict(found)
            del row["seen_status"]
            rows[rid] = row
            seen.covered.add(rid)
        if found["seen_status"] is not None:
            seen.statuses.add((rid, str(found["seen_status"])))
    return list(rows.values())


def _bare(report: DeliveryReport) -> bool:
    """Whether only a scan could find this report's row (an apiMsgId and nothing indexed)."""
    return (
        report.recipient_id is None
        and _usable_to(report) is None
        and report.api_message_id is not None
        and len(report.api_message_id) <= API_MESSAGE_ID_LENGTH
    )


def _usable_to(report: DeliveryReport) -> str | None:
    to = report.to.lstrip("+") if report.to else None
    return to if to and len(to) <= MSISDN_LENGTH else None


class CampaignIds:
    """The campaign ids the row lookups name, kept between one writer's batches.

    Read again before a batch declares a report unmatched (a campaign created since), so a
    kept list never costs a match; a campaign deleted since only costs an empty index range.
    """

    __slots__ = ("_ids", "fresh")

    def __init__(self) -> None:
        self._ids: list[int] | None = None
        self.fresh = False  # read in this batch

    def ids(self, conn: Connection, *, fresh: bool = False) -> list[int]:
        if self._ids is None or (fresh and not self.fresh):
            self._ids = sorted(int(i) for i in conn.execute(select(campaigns.c.id)).scalars())
            self.fresh = True
        return self._ids


def match(
    conn: Connection,
    reports: Sequence[DeliveryReport],
    rows: dict[int, dict[str, Any]],
    hints: Mapping[str, int],
    seen: Seen,
    known: CampaignIds,
) -> tuple[list[int | None], list[bool]]:
    """The recipient id of each report (or None), its row put in ``rows`` (locked).

    By recipient id (querymsg), by cliMsgId + number (the (campaign_id, client_message_id)
    index), then by apiMsgId among the rows of the number (the (campaign_id, msisdn) index): no
    lookup scans recipients. ``looked[i]``: report i's number was searched under lock, so if its
    ID is recorded later, the recording sees the kept receipt (see ``inbox``).
    """
    n = len(reports)
    targets: list[int | None] = [None] * n
    looked = [False] * n
    usable_to = _usable_to

    hinted = {
        i: hints[str(r.api_message_id)]
        for i, r in enumerate(reports)
        if r.recipient_id is None and r.api_message_id in hints
    }
    by_id = {r.recipient_id for r in reports if r.recipient_id is not None}
    if by_id or hinted:
        wanted = sorted(by_id | set(hinted.values()))
        for row in load_rows(conn, _BY_ID, seen, {"b_rids": wanted}):
            rows[row["id"]] = row
        for i, report in enumerate(reports):
            if report.recipient_id in rows:
                targets[i] = report.recipient_id
            elif i in hinted:
                held = rows.get(hinted[i])
                if held is not None and held["api_message_id"] == report.api_message_id:
                    targets[i] = hinted[i]
    if not any(usable_to(r) for r in reports):
        return targets, looked
    ids = known.ids(conn)
    _lookup(conn, reports, targets, looked, rows, seen, ids)
    unmatched = any(t is None and usable_to(r) for t, r in zip(targets, reports, strict=True))
    # a report matched nothing: perhaps in a campaign created since the ids were read
    if unmatched and not known.fresh and known.ids(conn, fresh=True) != ids:
        _lookup(conn, reports, targets, looked, rows, seen, known.ids(conn))
    return targets, looked


def _lookup(
    conn: Connection,
    reports: Sequence[DeliveryReport],
    targets: list[int | None],
    looked: list[bool],
    rows: dict[int, dict[str, Any]],
    seen: Seen,
    campaign_ids: list[int],
) -> None:
    """Match the reports without a target yet by cliMsgId + number, then by number."""
    usable_to = _usable_to
    pairs = {
        (r.client_message_id, usable_to(r))
        for i, r in enumerate(reports)
        if targets[i] is None
        and r.client_message_id
        and len(r.client_message_id) <= CLIENT_MESSAGE_ID_LENGTH
        and usable_to(r)
    }
    if pairs:
        found: dict[tuple[str, str], int] = {}
        for row in load_rows(
            conn,
            _BY_CLI,
            seen,
            {
                "b_cids": campaign_ids,
                "b_clis": sorted({c for c, _ in pairs}),
                "b_tos": sorted({str(t) for _, t in pairs}),
            },
        ):
            rows.setdefault(row["id"], row)
            found.setdefault((row["client_message_id"], row["msisdn"]), row["id"])
        for i, r in enumerate(reports):
            if targets[i] is None and r.client_message_id:
                targets[i] = found.get((r.client_message_id, usable_to(r) or ""))
    numbers = {
        usable_to(r)
        for i, r in enumerate(reports)
        if targets[i] is None and r.api_message_id and usable_to(r)
    }
    if numbers:
        by_api: dict[tuple[str, str], int] = {}
        for row in load_rows(
            conn, _BY_NUMBER, seen, {"b_cids": campaign_ids, "b_tos": sorted(map(str, numbers))}
        ):
            rows.setdefault(row["id"], row)
            if row["api_message_id"]:
                by_api.setdefault((row["msisdn"], row["api_message_id"]), row["id"])
        for i, r in enumerate(reports):
            to = usable_to(r)
            if targets[i] is None and r.api_message_id and to:
                looked[i] = True
                targets[i] = by_api.get((to, r.api_message_id[:API_MESSAGE_ID_LENGTH]))
