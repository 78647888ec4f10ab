"""The commands around a run: report, reconcile, simulator, db."""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from batch_sender.cli.common import (
    LazyModule,
    check_writable,
    db_option,
    errors,
    gateway_settings,
    gateway_url_option,
    open_store,
    quiet,
)
from batch_sender.errors import InputError
from batch_sender.states import CampaignControl

if TYPE_CHECKING:
    from batch_sender import campaign
    from batch_sender import report as reports
else:  # imported when a command runs, not for --help
    campaign = LazyModule("batch_sender.campaign")
    reports = LazyModule("batch_sender.report")


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
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
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
def report(name: str | None, fmt: str, output: Path, html_file: Path | None, db_url: str) -> None:
    """Show what happened to a campaign (default: the latest one): states, delivery, cost.

    \b
    Examples:
      batch-sender report
      batch-sender report campaign-2026-11-25 --format csv -o results.csv
      batch-sender report campaign-2026-11-25 --html report.html
    """
    with errors(), open_store(db_url, "existing") as store:
        if name is None:
            known = store.campaigns()
            if not known:
                raise InputError("no campaigns in this database yet")
            name = max(known, key=lambda c: c.created_at or date.min).name
        built = reports.build(store, name)
        try:
            with _output(output) as out:
                if fmt == "json":
                    out.write(reports.to_json(built) + "\n")
                elif fmt == "csv":
                    reports.write_csv(store.results(built.campaign.id), out)
                else:
                    out.write(reports.render_table(built) + "\n")
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # `report | head`: click exits quietly, as for any command
            where = "standard output" if str(output) == "-" else str(output)
            raise InputError(f"cannot write {where}: {exc.strerror or exc}") from exc
        if html_file is not None:
            try:
                reports.write_html(built, html_file)
            except OSError as exc:
                raise InputError(f"cannot write {html_file}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _output(path: Path) -> Iterator[IO[str]]:
    """The report's destination: standard output for ``-``, else the file (replaced)."""
    if str(path) == "-":
        out = sys.stdout
        yield out
        out.flush()
        return
    with path.open("w", encoding="utf-8", newline="") as f:
        yield f


@click.command()
@click.argument("name")
@click.option("--resend-unknown", is_flag=True, hidden=True)
@click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds a run's claims stay its own without a heartbeat (as `run --lease`): rows "
    "claimed by a run that is alive, or whose lease has not lapsed, are left to it.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Settle 'sending' rows even if their run still holds them. Only when you know that no "
    "run of this campaign is alive anywhere (it would send them anyway: twice).",
)
@click.option(
    "--max-processing",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds the gateway may hold a request before accepting it: 'never seen' (ERR 104) "
    "sends rows back to pending only this long after their request can have left (waited for).",
)
@gateway_url_option
@db_option
def reconcile(
    name: str,
    resend_unknown: bool,
    lease: float,
    force: bool,
    max_processing: float,
    gateway_url: str,
    db_url: str,
) -> None:
    """Settle 'sending' and 'unknown' recipients of a campaign by asking the gateway (querymsg).

    Rows the gateway never accepted go back to 'pending' (the next run sends them), once their
    request can no longer land (--max-processing); a one-number request it accepted becomes
    'sent'. Rows a live run holds are left alone unless --force.
    """
    from batch_sender.send import settle
    from batch_sender.states import Status

    with errors(), open_store(db_url, "existing") as store:
        camp = store.campaign(name)
        if camp is None:
            raise InputError(f"no campaign named {name!r}")
        with campaign.open_client(gateway_settings(gateway_url), max_connections=1) as client:
            stats = settle.settle(
                store,
                client,
                camp.id,
                statuses=(Status.SENDING, Status.UNKNOWN),
                lease=lease,
                force=force,
                max_processing=max_processing,
            )
        # never-accepted rows of a cancelled campaign stay unsent
        if camp.control == CampaignControl.CANCELLED:
            from batch_sender.store import control as store_control

            store_control.cancel_pending(store, camp.id)
        held = store.census(camp.id).counts[Status.SENDING]
    said = (
        f"asked about {stats.requests} requests: {stats.sent} sent, "
        f"{stats.requeued} back to pending, {stats.unknown} still unknown"
        + (f"; {held} rows still held by a live run (--force to settle them)" if held else "")
    )
    if not quiet():
        click.echo(said)
    elif stats.unknown or held:  # -q: say it only when a person has something to look at
        click.echo(f"batch-sender: warning: {said}", err=True)


def _pairs(values: tuple[str, ...], option: str, what: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise click.BadParameter(f"{value!r}: expected {what}", param_hint=option)
        out.append((key, item))
    return out


_FAULT_HELP = (
    "http_503, http_429, http_500, soap_fault, err_901 (nothing accepted); drop_before (closed "
    "unanswered, nothing accepted); drop_after, http_502_after, http_504_after (accepted, then "
    "the connection closes or a proxy's error page); slow (accepted at once, answered "
    "--slow-seconds late); slow_accept (held --slow-seconds before it is accepted: querymsg "
    "answers 104 meanwhile, even if the client has given up); short_error (one ERR for the "
    "first number only, nothing accepted); short_accept (all accepted, only the first number "
    "answered); twice_first (all accepted, the first number answered once per number); "
    "bad_ids (accepted, IDs not 32 hex); throttle (ERR 130 for --throttle-seconds); "
    "expire_sessions."
)


@click.command(epilog="Fault kinds (--fault, --inject): " + _FAULT_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8099, show_default=True, type=int, help="Port to listen on (0: any free)."
)
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
    "--session-ttl",
    type=click.FloatRange(min=0),
    default=900.0,
    show_default=True,
    help="Seconds of inactivity before a session expires (ERR 003).",
)
@click.option(
    "--number-error",
    "number_errors",
    multiple=True,
    metavar="NUMBER=CODE",
    help="Answer ERR CODE for this number or number prefix (e.g. 27999=105). Repeatable.",
)
@click.option(
    "--unroutable",
    multiple=True,
    metavar="PREFIX",
    help="Answer ERR 114 for numbers with this prefix. Repeatable.",
)
@click.option(
    "--error-rate-5xx",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of sendmsg requests answered HTTP 503 (same as --fault http_503=RATE).",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of sendmsg requests whose connection is dropped after acceptance "
    "(same as --fault drop_after=RATE).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND=RATE",
    help="Inject fault KIND into this share (0-1) of sendmsg requests, drawn from --seed; "
    "repeatable. Kinds: see below.",
)
@click.option(
    "--inject",
    "scripted",
    multiple=True,
    metavar="KIND=COUNT",
    help="Apply fault KIND to the next COUNT sendmsg requests, in order, before any random "
    "fault (e.g. --inject slow_accept=2: the first two requests are accepted late). Repeatable.",
)
@click.option(
    "--slow-seconds",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="How late `slow` answers, and how long `slow_accept` holds a request.",
)
@click.option(
    "--throttle-seconds",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="How long a `throttle` fault answers ERR 130.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random faults.")
@click.option("--callback-url", help="Post delivery callbacks here (msg_callback > 0).")
@click.option(
    "--echo-secrets",
    type=click.Choice(["session", "password"]),
    multiple=True,
    help="Behave like a careless gateway: echo the session ID in sendmsg error descriptions "
    "(session), user/password in ERR 001 (password). Repeatable.",
)
@click.option(
    "--no-keep-messages",
    is_flag=True,
    help="Do not keep accepted messages in memory (long benchmarks; querymsg then knows none).",
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
    session_ttl: float,
    number_errors: tuple[str, ...],
    unroutable: tuple[str, ...],
    error_rate_5xx: float,
    drop_rate: float,
    faults: tuple[str, ...],
    scripted: tuple[str, ...],
    slow_seconds: float,
    throttle_seconds: float,
    seed: int,
    callback_url: str | None,
    echo_secrets: tuple[str, ...],
    no_keep_messages: bool,
) -> None:
    """Run the Clickatell SOAP gateway simulator (document/literal) until interrupted.

    Every gateway behaviour the tests use can be set from here (``python -m
    batch_sender.simulator`` is this same command).

    \b
    Example:
      batch-sender simulator --port 8099 --record sent.jsonl --latency-ms 50
      BATCH_SENDER_GATEWAY_URL=http://127.0.0.1:8099/soap/document_literal/webservice \\
      CLICKATELL_API_ID=123456 CLICKATELL_USER=MyUserName CLICKATELL_PASSWORD=MyPassword \\
          batch-sender run campaign.csv --text "Hello"
      batch-sender simulator --inject slow_accept=1 --slow-seconds 5   # a slow gateway
    """
    from batch_sender.simulator import Simulator, SimulatorConfig
    from batch_sender.simulator.config import FAULT_KINDS
    from batch_sender.simulator.server import serve

    kinds = ", ".join(sorted(FAULT_KINDS))
    fault_rates = {"http_503": error_rate_5xx, "drop_after": drop_rate}
    for kind, rate in _pairs(faults, "--fault", "KIND=RATE"):
        try:
            share = float(rate)
        except ValueError:
            share = -1.0
        if kind not in FAULT_KINDS or not 0.0 <= share <= 1.0:
            raise click.BadParameter(
                f"{kind}={rate}: expected KIND=RATE, RATE in 0-1, KIND one of {kinds}",
                param_hint="--fault",
            )
        fault_rates[kind] = share
    with errors():
        check_writable(record, "record file")
    script = []
    for kind, count in _pairs(scripted, "--inject", "KIND=COUNT"):
        if kind not in FAULT_KINDS or not count.isdigit():
            raise click.BadParameter(
                f"{kind}={count}: expected KIND=COUNT, KIND one of {kinds}", param_hint="--inject"
            )
        script.append((kind, int(count)))
    config = SimulatorConfig(
        host=host,
        port=port,
        api_id=api_id,
        user=user,
        password=password,
        latency_ms=latency_ms,
        record=record,
        credits=credits,
        max_mps=max_mps,
        session_ttl=session_ttl,
        number_errors=dict(_pairs(number_errors, "--number-error", "NUMBER=CODE")),
        unroutable_prefixes=unroutable,
        fault_rates={k: v for k, v in fault_rates.items() if v},
        slow_seconds=slow_seconds,
        throttle_seconds=throttle_seconds,
        seed=seed,
        callback_url=callback_url,
        echo_secrets=frozenset(echo_secrets),
        keep_messages=not no_keep_messages,
    )

    def prepare(sim: Simulator) -> None:
        for kind, count in script:
            sim.inject(kind, count)

    serve(config, prepare=prepare)


@click.group()
def db() -> None:
    """Manage the results database's schema."""


@db.command()
@db_option
def upgrade(db_url: str) -> None:
    """Create or upgrade the results database to the current schema (Alembic)."""
    with errors(), open_store(db_url, "create"):
        click.echo("database is at the current schema")
