"""What happened to a campaign, for people (a table) and for programs (CSV, JSON).

Reports read the database only; the CSV export is safe to open in a spreadsheet (cells that a
spreadsheet would run as a formula are prefixed with a quote).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO

from batch_sender.errors import InputError
from batch_sender.states import Status
from batch_sender.store import Campaign, Store

__all__ = ["CampaignReport", "build", "render_table", "safe_cell", "to_json", "write_csv"]

RESULT_COLUMNS = (
    "campaign",
    "row_no",
    "msisdn",
    "status",
    "api_message_id",
    "error_code",
    "error_description",
    "client_message_id",
    "parts",
    "attempts",
    "updated_at",
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula
TOP_ERRORS = 10  # error codes listed in the table


@dataclass(slots=True)
class CampaignReport:
    campaign: Campaign
    counts: dict[str, int]
    parts: int
    errors: list[tuple[str | None, str | None, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, object]:
        c = self.campaign
        return {
            "campaign": c.name,
            "source": c.source,
            "status": c.status,
            "created_at": _iso(c.created_at),
            "started_at": _iso(c.started_at),
            "finished_at": _iso(c.finished_at),
            "recipients": self.total,
            "counts": self.counts,
            "parts": self.parts,
            "errors": [
                {"error_code": code, "error_description": desc, "recipients": n}
                for code, desc, n in self.errors
            ],
        }


def _iso(value: object) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


def build(store: Store, name: str) -> CampaignReport:
    campaign = store.campaign(name)
    if campaign is None:
        known = ", ".join(c.name for c in store.campaigns()[-5:]) or "none yet"
        raise InputError(f"no campaign named {name!r} (recent: {known})")
    counts = {str(k): v for k, v in store.counts(campaign.id).items() if v}
    return CampaignReport(
        campaign=campaign,
        counts=counts,
        parts=store.parts_total(campaign.id),
        errors=store.error_counts(campaign.id),
    )


def render_table(report: CampaignReport) -> str:
    """A short text summary, as printed at the end of a run and by ``batch-sender report``."""
    c = report.campaign
    lines = [f"campaign {c.name}  ({c.status}; source: {c.source})"]
    order = [s.value for s in Status]
    width = max((len(s) for s in report.counts), default=6)
    for status in sorted(report.counts, key=lambda s: order.index(s) if s in order else 99):
        n = report.counts[status]
        share = 100.0 * n / report.total if report.total else 0.0
        lines.append(f"  {status:<{width}}  {n:>9,}  {share:5.1f}%")
    lines.append(f"  {'total':<{width}}  {report.total:>9,}")
    lines.append(f"  message parts (credits at 1 per part): {report.parts:,}")
    if report.errors:
        lines.append("  errors:")
        for code, desc, n in report.errors[:TOP_ERRORS]:
            lines.append(f"    {code or '-':>4}  {n:>9,}  {desc or ''}")
    return "\n".join(lines)


def to_json(report: CampaignReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


def safe_cell(value: object) -> object:
    """Neutralise spreadsheet formulas (``=``, ``+``, ``-``, ``@``) in exported text."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, object]], out: IO[str]) -> int:
    """Write per-recipient results as CSV; return the number of rows."""
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([safe_cell(_plain(row.get(col))) for col in RESULT_COLUMNS])
        n += 1
    return n


def _plain(value: object) -> object:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
