"""The commands around a run: report, reconcile, simulator, db."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import click

from batch_sender import campaign
from batch_sender import report as reports
from batch_sender.cli.common import (
    db_option,
    errors,
    gateway_settings,
    gateway_url_option,
    quiet,
)
from batch_sender.errors import InputError


@click.command()
@click.argument("name", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: summary; csv: one row per recipient; json: summary.",
)
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to this file instead of stdout.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write a self-contained HTML page (chart of deliveries over time) to this file.",
)
@db_option
def report(name: str | None, fmt: str, output: Any, html_file: Path | None, db_url: str) -> None:
    """Show what happened to a campaign (default: the latest one): states, delivery, cost.

    \b
    Examples:
      batch-sender report
      batch-sender report campaign-2026-11-25 --format csv -o results.csv
      batch-sender report campaign-2026-11-25 --html report.html
    """
    from batch_sender.store import Store

    with errors(), Store.open(db_url) as store:
        if name is None:
            known = store.campaigns()
            if not known:
                raise InputError("no campaigns in this database yet")
            name = max(known, key=lambda c: c.created_at or date.min).name
        built = reports.build(store, name)
        if fmt == "json":
            output.write(reports.to_json(built) + "\n")
        elif fmt == "csv":
            reports.write_csv(store.results(built.campaign.id), output)
        else:
            output.write(reports.render_table(built) + "\n")
        if html_file is not None:
            try:
                reports.write_html(built, html_file)
            except OSError as exc:
                raise InputError(f"cannot write {html_file}: {exc.strerror or exc}") from exc


@click.command()
@click.argument("name")
@click.option("--resend-unknown", is_flag=True, hidden=True)
@gateway_url_option
@db_option
def reconcile(name: str, resend_unknown: bool, gateway_url: str, db_url: str) -> None:
    """Settle 'sending' and 'unknown' recipients of a campaign by asking the gateway (querymsg).

    Rows the gateway never accepted go back to 'pending' (the next run sends them); rows it
    accepted become 'sent'.
    """
    from batch_sender import settle
    from batch_sender.states import Status
    from batch_sender.store import Store

    with errors(), Store.open(db_url) as store:
        camp = store.campaign(name)
        if camp is None:
            raise InputError(f"no campaign named {name!r}")
        with campaign.open_client(gateway_settings(gateway_url), max_connections=1) as client:
            stats = settle.settle(
                store, client, camp.id, statuses=(Status.SENDING, Status.UNKNOWN), lease=0.0
            )
        if camp.control == "cancelled":  # never-accepted rows of a cancelled campaign stay unsent
            from batch_sender.store import control as store_control

            store_control.cancel_pending(store, camp.id)
    said = (
        f"asked about {stats.requests} requests: {stats.sent} sent, "
        f"{stats.requeued} back to pending, {stats.unknown} still unknown"
    )
    if not quiet():
        click.echo(said)
    elif stats.unknown:  # -q: say it only when a person has something to look at
        click.echo(f"batch-sender: warning: {said}", err=True)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8099, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--api-id",
    envvar="CLICKATELL_API_ID",
    default="123456",
    show_default=True,
    help="Accepted api_id. Env: CLICKATELL_API_ID.",
)
@click.option(
    "--user",
    envvar="CLICKATELL_USER",
    default="MyUserName",
    show_default=True,
    help="Accepted user. Env: CLICKATELL_USER.",
)
@click.option(
    "--password",
    envvar="CLICKATELL_PASSWORD",
    default="MyPassword",
    help="Accepted password. Env: CLICKATELL_PASSWORD.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Delay before each answer.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per accepted message to this file.",
)
@click.option("--credits", type=float, default=1e9, show_default=True, help="Account balance.")
@click.option("--max-mps", type=float, help="Messages per second before ERR 130.")
@click.option(
    "--error-rate-5xx",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of sendmsg requests answered HTTP 503.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of sendmsg requests whose connection is dropped after acceptance.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=RATE",
    help=(
        "Inject a fault into this share (0-1) of sendmsg requests; repeatable. Kinds: "
        "http_503, http_500, soap_fault, err_901 (nothing accepted); drop_before (closed "
        "unanswered, nothing accepted); drop_after, http_502_after, http_504_after (accepted, "
        "then the connection closes or a proxy error page); slow (accepted, answered late); "
        "short_error (one ERR for the first number only, nothing accepted); short_accept "
        "(all accepted, only the first number answered); bad_ids (accepted, IDs not 32 hex); "
        "throttle (ERR 130); expire_sessions."
    ),
)
@click.option("--callback-url", help="Post delivery callbacks here (msg_callback > 0).")
@click.option(
    "--echo-secrets",
    type=click.Choice(["session", "password"]),
    multiple=True,
    help="Behave like a careless gateway: echo the session ID in sendmsg error descriptions "
    "(session), user/password in ERR 001 (password). Repeatable.",
)
def simulator(
    host: str,
    port: int,
    api_id: str,
    user: str,
    password: str,
    latency_ms: float,
    record: Path | None,
    credits: float,
    max_mps: float | None,
    error_rate_5xx: float,
    drop_rate: float,
    faults: tuple[str, ...],
    callback_url: str | None,
    echo_secrets: tuple[str, ...],
) -> None:
    """Run the Clickatell SOAP gateway simulator (document/literal) until interrupted.

    \b
    Example:
      batch-sender simulator --port 8099 --record sent.jsonl --latency-ms 50
      BATCH_SENDER_GATEWAY_URL=http://127.0.0.1:8099/soap/document_literal/webservice \\
      CLICKATELL_API_ID=123456 CLICKATELL_USER=MyUserName CLICKATELL_PASSWORD=MyPassword \\
          batch-sender run campaign.csv --text "Hello"
    """
    from batch_sender.simulator import SimulatorConfig, serve
    from batch_sender.simulator.config import FAULT_KINDS

    fault_rates = {"http_503": error_rate_5xx, "drop_after": drop_rate}
    for fault in faults:
        kind, _, rate = fault.partition("=")
        try:
            share = float(rate)
        except ValueError:
            share = -1.0
        if kind not in FAULT_KINDS or not 0.0 <= share <= 1.0:
            raise click.BadParameter(
                f"{fault!r}: expected KIND=RATE, RATE in 0-1, KIND one of "
                f"{', '.join(sorted(FAULT_KINDS))}",
                param_hint="--fault",
            )
        fault_rates[kind] = share

    serve(
        SimulatorConfig(
            host=host,
            port=port,
            api_id=api_id,
            user=user,
            password=password,
            latency_ms=latency_ms,
            record=record,
            credits=credits,
            max_mps=max_mps,
            fault_rates=fault_rates,
            callback_url=callback_url,
            echo_secrets=frozenset(echo_secrets),
        )
    )


@click.group()
def db() -> None:
    """Manage the results database's schema."""


@db.command()
@db_option
def upgrade(db_url: str) -> None:
    """Create or upgrade the results database to the current schema (Alembic)."""
    from batch_sender.store import Store

    with errors(), Store.open(db_url, upgrade=True):
        click.echo("database is at the current schema")
