"""What happened to a campaign, for people (a table, an HTML page) and programs (CSV, JSON).

Reports read the database only; the CSV export is safe to open in a spreadsheet (cells that a
spreadsheet would run as a formula are prefixed with a quote). Delivery figures (callbacks and
``querymsg``) come from :class:`~batch_sender.store.delivery.DeliveryStore`. The HTML page is
one self-contained file (inline CSS and an inline SVG chart, no scripts, no external assets), so
it can be mailed or opened offline.
"""

from __future__ import annotations

import csv
import html
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO

from batch_sender.errors import InputError
from batch_sender.gateway import delivery_codes as statuses
from batch_sender.states import CampaignStatus, Status
from batch_sender.store import Campaign, Store
from batch_sender.store.delivery import (
    DeliveryCounts,
    DeliveryStore,
    SlowDelivery,
    TimelineBucket,
)

__all__ = [
    "CampaignReport",
    "build",
    "render_html",
    "render_table",
    "safe_cell",
    "to_json",
    "write_csv",
    "write_html",
]

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
    "delivery_status",
    "delivery_status_name",
    "delivered_at",
    "charge",
    "text",  # the message as the recipient read it
)
#: a source column named like a result column is exported as ``source_<name>``
SOURCE_PREFIX = "source_"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula
TOP_ERRORS = 10  # error codes listed in the table
SLOWEST = 10  # slowest deliveries listed


#: Where a row's error arose, by its state: refused at staging, or by the gateway.
STAGES = {Status.REJECTED: "staging", Status.FAILED: "send"}
WAITING = "waiting"  # a finished run left rows pending (a send window, --at): the next run sends
NO_RECEIPTS = "no delivery receipts requested"


@dataclass(slots=True)
class CampaignReport:
    campaign: Campaign
    counts: dict[str, int]
    parts: int  # message parts of every row accepted for sending, sent or not
    #: (state, code, description, recipients) of rejected and failed rows
    errors: list[tuple[Status, str | None, str | None, int]] = field(default_factory=list)
    delivery: DeliveryCounts | None = None
    delivery_statuses: list[tuple[str, int]] = field(default_factory=list)  # code, recipients
    slowest: list[SlowDelivery] = field(default_factory=list)
    timeline: list[TimelineBucket] = field(default_factory=list)
    credits_spent: int = 0  # parts the gateway accepted (sent)
    credits_to_spend: int = 0  # parts still pending (or claimed, unanswered)
    credits_unknown: int = 0  # parts whose answer was lost: perhaps charged
    #: whether the campaign asked for delivery receipts (``--callback``)
    receipts_requested: bool = True

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> str:
        """The campaign's state for people: ``waiting`` when a finished run left rows pending."""
        finished = self.campaign.status == CampaignStatus.FINISHED
        if finished and self.counts.get(Status.PENDING.value):
            return WAITING
        return self.campaign.status

    @property
    def receipts_shown(self) -> bool:
        """Whether delivery figures mean anything: receipts asked for, or statuses recorded
        (``track`` asks the gateway without callbacks)."""
        return self.receipts_requested or self.has_delivery

    @property
    def has_delivery(self) -> bool:
        """Whether any delivery status was recorded (callbacks or ``track``)."""
        return bool(self.delivery_statuses)

    @property
    def delivery_errors(self) -> list[tuple[str, str, int]]:
        """(status, name, recipients) of final delivery errors, most common first."""
        return [
            (code, statuses.name_of(code) or "", n)
            for code, n in self.delivery_statuses
            if code in statuses.FAILED_FINAL
        ]

    def as_dict(self) -> dict[str, object]:
        c = self.campaign
        return {
            "campaign": c.name,
            "source": c.source,
            "status": self.status,
            "created_at": _iso(c.created_at),
            "started_at": _iso(c.started_at),
            "finished_at": _iso(c.finished_at),
            "recipients": self.total,
            "counts": self.counts,
            "parts": self.parts,
            "credits": {
                "spent": self.credits_spent,
                "to_spend": self.credits_to_spend,
                "unknown": self.credits_unknown,
            },
            "errors": [
                {
                    "stage": STAGES[state],
                    "status": state.value,
                    "error_code": code,
                    "error_description": desc,
                    "recipients": n,
                }
                for state, code, desc, n in self.errors
            ],
            "delivery": self._delivery_dict(),
        }

    def _delivery_dict(self) -> dict[str, object] | None:
        d = self.delivery
        if d is None:
            return None
        if not self.receipts_shown:
            return {"receipts_requested": False, "accepted": d.accepted, "note": NO_RECEIPTS}
        return {
            "receipts_requested": self.receipts_requested,
            "accepted": d.accepted,
            "delivered": d.delivered,
            "failed": d.undelivered,
            "in_progress": d.in_progress,
            "unknown": d.no_report,
            "delivery_rate": None
            if d.delivery_rate is None or not self.has_delivery
            else round(d.delivery_rate, 6),
            "cost": {"credits": round(d.charge, 4), "messages_charged": d.charged},
            "statuses": [
                {"status": code, "name": statuses.name_of(code), "recipients": n}
                for code, n in self.delivery_statuses
            ],
            "errors": [
                {"status": code, "name": name, "recipients": n}
                for code, name, n in self.delivery_errors
            ],
            "slowest": [
                {
                    "row_no": s.row_no,
                    "msisdn": s.msisdn,
                    "api_message_id": s.api_message_id,
                    "sent_at": _iso(s.sent_at),
                    "delivered_at": _iso(s.delivered_at),
                    "seconds": round(s.seconds, 3),
                }
                for s in self.slowest
            ],
        }


def _iso(value: object) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


def build(store: Store, name: str) -> CampaignReport:
    campaign = store.campaign(name)
    if campaign is None:
        known = ", ".join(c.name for c in store.campaigns()[-5:]) or "none yet"
        raise InputError(f"no campaign named {name!r} (recent: {known})")
    census = store.census(campaign.id)
    deliveries = DeliveryStore(store)
    received = deliveries.status_counts(campaign.id)
    return CampaignReport(
        credits_spent=census.credits_spent,
        credits_to_spend=census.credits_to_spend,
        credits_unknown=census.credits_unknown,
        receipts_requested=bool(campaign.options.get("callback")),
        campaign=campaign,
        counts={str(k): v for k, v in census.counts.items() if v},
        parts=census.parts,
        errors=store.error_counts(campaign.id),
        delivery=deliveries.counts(campaign.id),
        delivery_statuses=received,
        # (nothing to find without any status: spare the end-of-run summary two scans)
        slowest=deliveries.slowest(campaign.id, SLOWEST) if received else [],
        timeline=deliveries.timeline(campaign.id) if received else [],
    )


def render_table(report: CampaignReport) -> str:
    """A short text summary, as printed at the end of a run and by ``batch-sender report``."""
    c = report.campaign
    lines = [f"campaign {c.name}  ({report.status}; source: {c.source})"]
    order = [s.value for s in Status]
    width = max((len(s) for s in report.counts), default=6)
    for status in sorted(report.counts, key=lambda s: order.index(s) if s in order else 99):
        n = report.counts[status]
        share = 100.0 * n / report.total if report.total else 0.0
        lines.append(f"  {status:<{width}}  {n:>9,}  {share:5.1f}%")
    lines.append(f"  {'total':<{width}}  {report.total:>9,}")
    lines.append(f"  credits (1 per message part): {_credits(report)}")
    for state, heading in (
        (Status.REJECTED, "rejected at staging"),
        (Status.FAILED, "refused by the gateway"),
    ):
        errors = [e for e in report.errors if e[0] is state]
        if errors:
            lines.append(f"  {heading}:")
            for _, code, desc, n in errors[:TOP_ERRORS]:
                lines.append(f"    {code or '-':>4}  {n:>9,}  {desc or ''}")
    if report.has_delivery and report.delivery is not None:
        lines.extend(_delivery_lines(report, report.delivery))
    elif not report.receipts_shown:
        lines.append(f"  delivery: {NO_RECEIPTS} (--callback)")
    return "\n".join(lines)


def _credits(report: CampaignReport) -> str:
    """``1,990 spent, 1,848 still to spend``: what the campaign cost and what it will cost."""
    text = f"{report.credits_spent:,} spent, {report.credits_to_spend:,} still to spend"
    if report.credits_unknown:
        text += f", {report.credits_unknown:,} unknown (answer lost: perhaps charged)"
    return text


def _delivery_lines(report: CampaignReport, d: DeliveryCounts) -> list[str]:
    def share(n: int) -> str:
        return f"{100.0 * n / d.accepted:5.1f}%" if d.accepted else ""

    lines = [f"  delivery of {d.accepted:,} accepted messages:"]
    for label, n in (
        ("delivered", d.delivered),
        ("failed", d.undelivered),
        ("in progress", d.in_progress),
        ("unknown", d.no_report),
    ):
        lines.append(f"    {label:<11}  {n:>9,}  {share(n)}")
    if d.delivery_rate is not None:
        lines.append(f"  delivery rate: {100.0 * d.delivery_rate:.1f}%")
    lines.append(f"  cost (from receipts): {d.charge:,.2f} credits for {d.charged:,} messages")
    if report.delivery_errors:
        lines.append("  delivery errors:")
        for code, name, n in report.delivery_errors[:TOP_ERRORS]:
            lines.append(f"    {code:>4}  {n:>9,}  {name}")
    if report.slowest:
        lines.append("  slowest deliveries:")
        for s in report.slowest:
            lines.append(f"    row {s.row_no:<7} {s.msisdn:<16} {_duration(s.seconds):>9}")
    return lines


def _duration(seconds: float) -> str:
    """``4.2 s``, ``12 min 5 s``, ``3 h 20 min``: how long a delivery took."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def to_json(report: CampaignReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


def safe_cell(value: object) -> object:
    """Neutralise spreadsheet formulas (``=``, ``+``, ``-``, ``@``) in exported text."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(rows: Iterable[Mapping[str, object]], out: IO[str]) -> int:
    """Write per-recipient results as CSV, then each source column (from ``fields``, the
    first row's columns; ``source_<name>`` where a result column has the name); return the
    number of rows."""
    writer = csv.writer(out)
    iterator = iter(rows)
    first = next(iterator, None)
    source = list(_fields(first)) if first is not None else []
    writer.writerow(
        [*RESULT_COLUMNS, *(SOURCE_PREFIX + c if c in RESULT_COLUMNS else c for c in source)]
    )
    if first is None:
        return 0
    n = 0
    for row in itertools.chain((first,), iterator):
        values = _fields(row)
        writer.writerow(
            [safe_cell(_plain(row.get(col))) for col in RESULT_COLUMNS]
            + [safe_cell(_plain(values.get(col))) for col in source]
        )
        n += 1
    return n


def _fields(row: Mapping[str, object]) -> dict[str, object]:
    """A results row's source fields (its ``fields`` JSON); empty for rows staged without."""
    text = row.get("fields")
    if not isinstance(text, str) or not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _plain(value: object) -> object:
    if isinstance(value, float | Decimal):  # charges: the same text whatever the engine returns
        return f"{value:g}"
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
:root { --ok: #2e7d32; --bad: #c62828; --mid: #f9a825; --ink: #1d2733; --muted: #5f6b7a;
        --line: #d9dee5; --bg: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; }
.meta { color: var(--muted); margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px;
         margin: 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card dt { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card dd { margin: 4px 0 0; font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card.ok dd { color: var(--ok); } .card.bad dd { color: var(--bad); }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line);
        min-width: 420px; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: #eef1f5; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.chart { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
.chart text { font: 11px system-ui, sans-serif; fill: var(--muted); }
.legend span { display: inline-block; margin-right: 16px; color: var(--muted); }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 5px; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""

_CHART_W, _CHART_H = 1000, 280  # SVG user units
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 56, 56, 16, 40


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _card(key: str, label: str, value: str, raw: object, css: str = "") -> str:
    return (
        f'<div class="card {css}"><dt>{_e(label)}</dt>'
        f'<dd id="{key}" data-value="{_e(raw)}">{_e(value)}</dd></div>'
    )


def _rows_table(table_id: str, head: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v:,}</td>' if isinstance(v, int) else f"<td>{_e(v)}</td>" for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _chart(buckets: list[TimelineBucket]) -> str:
    """Stacked bars (delivered, failed) per interval and the cumulative share, as inline SVG."""
    if not buckets:
        return '<p class="empty" id="chart-empty">No final delivery status recorded yet.</p>'
    plot_w = _CHART_W - _PAD_L - _PAD_R
    plot_h = _CHART_H - _PAD_T - _PAD_B
    top = max(b.delivered + b.undelivered for b in buckets) or 1
    total = sum(b.delivered + b.undelivered for b in buckets) or 1
    step = plot_w / len(buckets)
    bar = max(1.0, step * 0.8)
    base = _PAD_T + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_CHART_W} {_CHART_H}" '
        f'width="100%" role="img" aria-labelledby="chart-title" id="chart">',
        '<title id="chart-title">Final delivery statuses over time</title>',
    ]
    for frac in (0.0, 0.5, 1.0):  # grid lines and left (count) / right (cumulative) axes
        y = base - frac * plot_h
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_CHART_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#d9dee5"/>'
        )
        parts.append(
            f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{round(top * frac):,}</text>'
        )
        parts.append(
            f'<text x="{_CHART_W - _PAD_R + 6}" y="{y + 4:.1f}">{round(100 * frac)}%</text>'
        )
    cumulative = 0
    points = [f"{_PAD_L:.1f},{base:.1f}"]
    for i, b in enumerate(buckets):
        x = _PAD_L + i * step + (step - bar) / 2
        h_ok = plot_h * b.delivered / top
        h_bad = plot_h * b.undelivered / top
        label = f"{_when(b.start)}: {b.delivered} delivered, {b.undelivered} failed"
        parts.append(
            f'<g class="bucket" data-delivered="{b.delivered}" '
            f'data-failed="{b.undelivered}"><title>{_e(label)}</title>'
        )
        if b.delivered:
            parts.append(
                f'<rect x="{x:.1f}" y="{base - h_ok:.1f}" width="{bar:.1f}" '
                f'height="{h_ok:.1f}" fill="#2e7d32"/>'
            )
        if b.undelivered:
            parts.append(
                f'<rect x="{x:.1f}" y="{base - h_ok - h_bad:.1f}" width="{bar:.1f}" '
                f'height="{h_bad:.1f}" fill="#c62828"/>'
            )
        parts.append("</g>")
        cumulative += b.delivered + b.undelivered
        x_end = _PAD_L + (i + 1) * step
        points.append(f"{x_end:.1f},{base - plot_h * cumulative / total:.1f}")
    parts.append(
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#1565c0" stroke-width="2"/>'
    )
    ticks = sorted({0, len(buckets) // 2, len(buckets)})
    for i in ticks:
        x = _PAD_L + i * step
        t = buckets[0].start.timestamp() + i * buckets[0].width
        stamp = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")
        anchor = "start" if i == 0 else "end" if i == len(buckets) else "middle"
        parts.append(f'<text x="{x:.1f}" y="{base + 18}" text-anchor="{anchor}">{stamp}</text>')
    width = buckets[0].width
    parts.append(
        f'<text x="{_PAD_L + plot_w / 2:.1f}" y="{_CHART_H - 4}" text-anchor="middle">'
        f"time (UTC), one bar per {_duration(width)}</text>"
    )
    parts.append("</svg>")
    legend = (
        '<p class="legend"><span><i style="background:#2e7d32"></i>delivered (004)</span>'
        '<span><i style="background:#c62828"></i>failed (final error)</span>'
        '<span><i style="background:#1565c0;height:2px;vertical-align:middle"></i>'
        "cumulative share of final statuses</span></p>"
    )
    return '<div class="chart">' + "".join(parts) + legend + "</div>"


def render_html(report: CampaignReport, *, now: datetime | None = None) -> str:
    """The report as one self-contained HTML page (no scripts, no external assets)."""
    c = report.campaign
    d = report.delivery
    cards = [_card("recipients", "recipients", f"{report.total:,}", report.total)]
    if d is not None and not report.receipts_shown:
        cards += [
            _card("accepted", "accepted", f"{d.accepted:,}", d.accepted),
            _card("delivery", "delivery", NO_RECEIPTS, "not-requested"),
        ]
    elif d is not None:
        known = report.has_delivery and d.delivery_rate is not None
        rate = f"{100 * d.delivery_rate:.1f}%" if known and d.delivery_rate is not None else "-"
        raw_rate = f"{d.delivery_rate:.6f}" if known and d.delivery_rate is not None else ""
        cards += [
            _card("accepted", "accepted", f"{d.accepted:,}", d.accepted),
            _card("delivered", "delivered", f"{d.delivered:,}", d.delivered, "ok"),
            _card("failed", "failed", f"{d.undelivered:,}", d.undelivered, "bad"),
            _card("in-progress", "in progress", f"{d.in_progress:,}", d.in_progress),
            _card("unknown", "unknown", f"{d.no_report:,}", d.no_report),
            _card("delivery-rate", "delivery rate", rate, raw_rate, "ok" if known else ""),
            _card("cost", "cost (credits)", f"{d.charge:,.2f}", f"{d.charge:.4f}"),
        ]
    cards += [
        _card("credits-spent", "credits spent", f"{report.credits_spent:,}", report.credits_spent),
        _card(
            "credits-to-spend",
            "credits still to spend",
            f"{report.credits_to_spend:,}",
            report.credits_to_spend,
        ),
    ]
    if report.credits_unknown:
        cards.append(
            _card(
                "credits-unknown",
                "credits unknown",
                f"{report.credits_unknown:,}",
                report.credits_unknown,
            )
        )
    order = [s.value for s in Status]
    status_rows = [
        (status, report.counts[status])
        for status in sorted(report.counts, key=lambda s: order.index(s) if s in order else 99)
    ]
    sections = [
        "<h2>Recipients by state</h2>",
        _rows_table("states", ("state", "recipients"), status_rows),
        "<h2>Deliveries over time</h2>",
        _chart(report.timeline),
        "<h2>Delivery statuses</h2>",
        _rows_table(
            "delivery-statuses",
            ("status", "name", "recipients"),
            [(code, statuses.name_of(code), n) for code, n in report.delivery_statuses],
        )
        if report.delivery_statuses
        else '<p class="empty">No delivery status recorded yet.</p>',
        "<h2>Errors</h2>",
    ]
    error_rows = [
        (STAGES[state], code or "-", desc or "", n) for state, code, desc, n in report.errors
    ]
    error_rows += [("delivery", code, name, n) for code, name, n in report.delivery_errors]
    sections.append(
        _rows_table("errors", ("stage", "code", "description", "recipients"), error_rows)
        if error_rows
        else '<p class="empty" id="no-errors">No errors.</p>'
    )
    sections.append("<h2>Slowest deliveries</h2>")
    sections.append(
        _rows_table(
            "slowest",
            ("row", "number", "sent", "delivered", "took"),
            [
                (
                    str(s.row_no),
                    s.msisdn,
                    _when(s.sent_at),
                    _when(s.delivered_at),
                    _duration(s.seconds),
                )
                for s in report.slowest
            ],
        )
        if report.slowest
        else '<p class="empty">No delivered message yet.</p>'
    )
    generated = _when(now or datetime.now(UTC))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Campaign {_e(c.name)} - batch-sender report</title>"
        f"<style>{_CSS}</style></head><body>"
        f'<h1 id="campaign">{_e(c.name)}</h1>'
        f'<p class="meta"><span id="status">{_e(report.status)}</span> &middot; '
        f"source {_e(c.source)} &middot; created "
        f"{_e(_when(c.created_at))} &middot; started {_e(_when(c.started_at))} &middot; "
        f"finished {_e(_when(c.finished_at))}</p>"
        f'<dl class="cards">{"".join(cards)}</dl>'
        + "".join(sections)
        + f"<footer>batch-sender report, generated {_e(generated)}. Delivered = status 004; "
        "failed = a final error status; unknown = accepted, no delivery status yet. Cost is "
        "the sum of the charges the delivery receipts reported. Credits spent = message parts "
        "the gateway accepted; still to spend = parts of rows not sent yet.</footer>"
        "</body></html>\n"
    )


def write_html(report: CampaignReport, path: Path) -> None:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    path.write_text(render_html(report), encoding="utf-8")
