"""``batch-sender campaigns``, ``pause``, ``resume``, ``cancel``: campaign control."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from batch_sender.cli.common import db_option, errors, quiet
from batch_sender.errors import InputError

__all__ = ["campaigns", "cancel", "pause", "resume"]

_SHOWN_STATES = ("pending", "sending", "sent", "failed", "unknown")  # columns; the rest: "other"


def _open(db_url: str):  # type: ignore[no-untyped-def]
    """The results database, which must exist already: control never creates or migrates one."""
    from sqlalchemy.engine import make_url

    from batch_sender.store import Store

    try:
        url = make_url(db_url)
    except Exception as exc:  # SQLAlchemy's ArgumentError, ValueError
        raise InputError(f"not a database URL: {db_url!r}") from exc
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        raise InputError(f"no results database at {db_url} (nothing has been run against it)")
    return Store.open(db_url, upgrade=False)


def _age(when: datetime | None, now: datetime) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``: how long ago."""
    if when is None:
        return "-"
    seconds = max((now - when).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Every campaign, not only the newest 20.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per campaign, one a line.")
@db_option
def campaigns(show_all: bool, as_json: bool, db_url: str) -> None:
    """List campaigns, newest first: name, status, counts, age.

    The status is an operator's `paused` or `cancelled` when one is set, else what the last run
    left: `running`, `finished`, `stopped` (by the gateway), `interrupted`, ...

    \b
    Examples:
      batch-sender campaigns
      batch-sender campaigns --all --json
    """
    from batch_sender import control

    with errors(), _open(db_url) as store:
        limit = None if show_all else control.DEFAULT_LIST_LIMIT
        lines = control.list_campaigns(store, limit=limit)
    if as_json:
        for line in lines:
            click.echo(json.dumps(line.as_dict()))
        return
    if not lines:
        click.echo("no campaigns yet")
        return
    now = datetime.now(UTC)
    header = ["campaign", "status", "recipients", *_SHOWN_STATES, "other", "age", "last run"]
    rows = [header]
    for line in lines:
        other = sum(n for s, n in line.counts.items() if s not in _SHOWN_STATES)
        rows.append(
            [
                line.name,
                line.status,
                f"{line.total:,}",
                *(f"{line.counts.get(s, 0):,}" for s in _SHOWN_STATES),
                f"{other:,}",
                _age(line.created_at, now),
                _age(line.finished_at or line.started_at, now),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


def _apply(action: str, name: str, db_url: str) -> None:
    """Run ``control.<action>`` on the named campaign and say what it did (not with -q)."""
    from batch_sender import control

    with errors(), _open(db_url) as store:
        said = getattr(control, action)(store, name)
    if not quiet():
        click.echo(said)


@click.command()
@click.argument("name")
@db_option
def pause(name: str, db_url: str) -> None:
    """Pause a campaign: every worker, on every machine, stops claiming within seconds.

    Requests in flight finish and are recorded; the rest stays pending. Runs of a paused
    campaign exit 3 (stopped, resumable) until `batch-sender resume NAME`.

    \b
    Example:
      batch-sender pause daily-2026-12-02
    """
    _apply("pause", name, db_url)


@click.command()
@click.argument("name")
@db_option
def resume(name: str, db_url: str) -> None:
    """Lift a pause: the next run of the campaign (the next cron tick) continues it.

    \b
    Example:
      batch-sender resume daily-2026-12-02
    """
    _apply("resume", name, db_url)


@click.command()
@click.argument("name")
@db_option
def cancel(name: str, db_url: str) -> None:
    """Cancel a campaign for good: its pending recipients become `cancelled` and are never sent.

    Requests in flight finish and are recorded; every worker stops claiming within seconds.
    Cannot be undone; later runs of the campaign exit 0 and send nothing.

    \b
    Example:
      batch-sender cancel daily-2026-12-02
    """
    _apply("cancel", name, db_url)
