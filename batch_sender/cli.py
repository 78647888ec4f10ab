"""The ``batch-sender`` command: parse options, call one library function, map errors to exits.

No SQL, XML or retry logic lives here (STYLE.md §1).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any

import click

from batch_sender import campaign, report, sources
from batch_sender.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_DB_URL,
    DEFAULT_GATEWAY_URL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PARTS,
    DEFAULT_MAX_WAIT,
    MAX_CHUNK_SIZE,
    PARAM_NAMES,
    GatewaySettings,
    MessageOptions,
    RunSettings,
)
from batch_sender.errors import EXIT_INTERRUPTED, BatchSenderError, InputError
from batch_sender.sender import SendProgress

log = logging.getLogger("batch_sender")

PROGRESS_LOG_EVERY = 10.0  # seconds between progress lines when not on a terminal


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="batch-sender")


class _Fail(click.ClickException):
    """A BatchSenderError turned into a one-line message and its exit code."""

    def __init__(self, exc: BatchSenderError) -> None:
        super().__init__(str(exc))
        self.exit_code = exc.exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"batch-sender: error: {self.format_message()}", err=True)


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except BatchSenderError as exc:
        raise _Fail(exc) from exc


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root = logging.getLogger("batch_sender")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batch-sender")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail to stderr.")
def cli(verbose: bool) -> None:
    """Send bulk SMS through Clickatell's SOAP API and keep an exact SQL record of every recipient.

    \b
    Quick start (no account needed, uses the built-in simulator):
      batch-sender run sample_data/campaign.csv --text "Hi {name}" --country ZA --simulator

    Environment: BATCH_SENDER_DB (SQLAlchemy URL, default sqlite:///batch_sender.db),
    BATCH_SENDER_GATEWAY_URL, CLICKATELL_API_ID, CLICKATELL_USER, CLICKATELL_PASSWORD.
    """
    _setup_logging(verbose)


db_option = click.option(
    "--db",
    "db_url",
    envvar="BATCH_SENDER_DB",
    default=DEFAULT_DB_URL,
    show_default=True,
    help="Results database (SQLAlchemy URL). Env: BATCH_SENDER_DB.",
)


def _gateway(url: str, *, read_timeout: float = 60.0) -> GatewaySettings:
    return GatewaySettings(
        url=url,
        api_id=os.environ.get("CLICKATELL_API_ID", ""),
        user=os.environ.get("CLICKATELL_USER", ""),
        password=os.environ.get("CLICKATELL_PASSWORD", ""),
        read_timeout=read_timeout,
    )


def _params(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in PARAM_NAMES:
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(PARAM_NAMES))}",
                param_hint="--param",
            )
        out.append((key, value))
    return tuple(out)


@cli.command()
@click.argument("source_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sql", help="Read recipients from this SQL query (with --source-db).")
@click.option(
    "--sql-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read the SQL query from a file.",
)
@click.option("--source-db", help="SQLAlchemy URL of the database that --sql reads.")
@click.option(
    "--text",
    help="Message text; {column} placeholders are filled from each row. "
    "Default: each row's 'text' column.",
)
@click.option(
    "--name",
    help="Campaign name. Default: <source file stem>-<YYYY-MM-DD>, so a "
    "second run the same day resumes instead of sending again.",
)
@click.option("--from", "sender", help="Sender ID (<from>): up to 16 digits or 11 letters/digits.")
@click.option("--flash", is_flag=True, help="Send as flash SMS (msg_type SMS_FLASH).")
@click.option(
    "--unicode/--no-unicode",
    default=None,
    help="Force UCS-2 or GSM. Default: GSM when every character fits, else UCS-2.",
)
@click.option("--udh", help="User data header, hex (binary messages).")
@click.option("--binary", is_flag=True, help="The text is a hex payload (binary message).")
@click.option(
    "--callback", type=click.IntRange(0, 7), help="Delivery callback level 0-7 (msg_callback)."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Another sendmsg parameter ({', '.join(sorted(PARAM_NAMES))}). Repeatable.",
)
@click.option("--country", help="Default region for national-format numbers (ISO code, e.g. ZA).")
@click.option(
    "--strict-numbers",
    is_flag=True,
    help="Also reject numbers that phonenumbers says are invalid for their country.",
)
@click.option("--to-column", default="to", show_default=True, help="The column holding numbers.")
@click.option("--delimiter", help="CSV delimiter. Default: sniffed from the file.")
@click.option(
    "--chunk-size",
    type=click.IntRange(1, MAX_CHUNK_SIZE),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    help="Recipients per sendmsg request.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Account-wide limit in message parts per second. Default: no limit.",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_WAIT,
    show_default=True,
    help="Longest pause (s) for ERR 130 before the run stops instead.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 50),
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="Tries of one request on retryable errors.",
)
@click.option(
    "--max-parts",
    type=click.IntRange(1, 35),
    default=DEFAULT_MAX_PARTS,
    show_default=True,
    help="Reject texts longer than this many message parts.",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for an answer; past it the request's outcome is 'unknown'.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count recipients, duplicates and parts; stage nothing, send nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option(
    "--resend-unknown",
    is_flag=True,
    help="Send 'unknown' recipients again (they may get the message twice).",
)
@click.option(
    "--simulator",
    is_flag=True,
    help="Start the built-in gateway simulator and send to it (demo, tests).",
)
@click.option(
    "--gateway-url",
    envvar="BATCH_SENDER_GATEWAY_URL",
    default=DEFAULT_GATEWAY_URL,
    show_default=True,
    help="SOAP endpoint. Env: BATCH_SENDER_GATEWAY_URL.",
)
@db_option
def run(
    source_file: Path | None,
    sql: str | None,
    sql_file: Path | None,
    source_db: str | None,
    text: str | None,
    name: str | None,
    sender: str | None,
    flash: bool,
    unicode: bool | None,
    udh: str | None,
    binary: bool,
    callback: int | None,
    params: tuple[str, ...],
    country: str | None,
    strict_numbers: bool,
    to_column: str,
    delimiter: str | None,
    chunk_size: int,
    concurrency: int,
    rate: float | None,
    max_wait: float,
    max_attempts: int,
    max_parts: int,
    read_timeout: float,
    dry_run: bool,
    as_json: bool,
    resend_unknown: bool,
    simulator: bool,
    gateway_url: str,
    db_url: str,
) -> None:
    """Send one campaign: stage every recipient, then send what is pending.

    \b
    Examples:
      batch-sender run campaign.csv --text "Hi {name}, your order shipped" --country ZA
      batch-sender run --sql "SELECT phone AS to, name FROM customers" \\
          --source-db postgresql://reader@db/crm --name crm-2026-11-25 --text "Hi {name}"
      batch-sender run campaign.csv --text "Hello" --dry-run --json

    Exit codes: 0 all accepted; 1 some failed or rejected; 2 usage/input error (nothing sent);
    3 stopped by the gateway (auth, credit); 4 some outcomes unknown; 130 interrupted (resumable).
    """
    with _errors():
        if sql_file is not None:
            sql = sql_file.read_text(encoding="utf-8")
        if (source_file is None) == (sql is None):
            raise InputError("give exactly one source: a CSV file or --sql/--sql-file")
        if binary and unicode:
            raise InputError("--binary and --unicode do not go together")
        if sql is not None:
            if not source_db:
                raise InputError("--sql needs --source-db URL")
            if not name:
                raise InputError("--sql needs --name (there is no file name to derive it from)")
            source = sources.open_sql(source_db, sql, to_column=to_column)
        else:
            assert source_file is not None
            source = sources.open_csv(source_file, to_column=to_column, delimiter=delimiter)
            name = name or f"{source_file.stem}-{date.today().isoformat()}"
        settings = RunSettings(
            name=name,
            text=text,
            country=country,
            strict_numbers=strict_numbers,
            message=MessageOptions(
                sender=sender,
                flash=flash,
                unicode=unicode,
                udh=udh,
                binary=binary,
                callback=callback,
                params=_params(params),
                max_parts=max_parts,
            ),
            chunk_size=chunk_size,
            concurrency=concurrency,
            rate=rate,
            max_wait=max_wait,
            max_attempts=max_attempts,
            resend_unknown=resend_unknown,
        )
        if dry_run:
            result = campaign.dry_run(source, settings)
            source.close()
            data = result.as_dict()
            if as_json:
                click.echo(json.dumps(data))
            else:
                for key, value in data.items():
                    click.echo(f"{key}: {value}")
            return
        code = _send(
            settings,
            source,
            db_url,
            _gateway(gateway_url, read_timeout=read_timeout),
            simulator=simulator,
            as_json=as_json,
        )
    sys.exit(code)


def _send(
    settings: RunSettings,
    source: sources.Source,
    db_url: str,
    gateway: GatewaySettings,
    *,
    simulator: bool,
    as_json: bool,
) -> int:
    from batch_sender.prepare import Preparer
    from batch_sender.store import Store

    preparer = Preparer(settings, source.columns)  # bad options or columns fail before any I/O
    with contextlib.ExitStack() as stack:
        if simulator:
            from batch_sender.simulator import Simulator, SimulatorConfig

            sim = stack.enter_context(Simulator(SimulatorConfig(port=0)))
            creds = sim.credentials
            gateway = GatewaySettings(
                url=sim.url,
                api_id=str(creds.api_id),
                user=creds.user,
                password=creds.password,
                read_timeout=gateway.read_timeout,
            )
            log.info("sending to the built-in simulator at %s", sim.url)
        store = stack.enter_context(Store.open(db_url))
        client = stack.enter_context(
            campaign.open_client(gateway, max_connections=settings.concurrency)
        )
        stop = threading.Event()
        stack.enter_context(_signals(stop))
        display = stack.enter_context(_Progress())
        result = campaign.run(
            settings,
            source=source,
            store=store,
            client=client,
            preparer=preparer,
            stop=stop,
            progress=display.update,
            on_staged=display.staged,
        )
        display.close()
        if as_json:
            click.echo(json.dumps(result.as_dict()))
        else:
            click.echo(report.render_table(report.build(store, result.campaign)))
            if result.stop_reason:
                click.echo(f"stopped: {result.stop_reason}", err=True)
            if result.interrupted:
                click.echo("interrupted: run the same command again to resume", err=True)
        return result.exit_code


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop claiming, finish in-flight requests. Second: exit at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.error("second signal: exiting now; in-flight rows are settled by the next run")
            os._exit(EXIT_INTERRUPTED)
        log.warning(
            "signal %d: finishing in-flight requests (signal again to quit at once)", signum
        )
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class _Progress:
    """A progress bar on a terminal; a log line every few seconds otherwise (cron mails those)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._total = 0
        self._bar: Any = None
        self._last_log = 0.0
        self._shown = 0

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def staged(self, camp: Any, counts: dict[str, int]) -> None:
        self._total = counts.get("pending", 0) + counts.get("sending", 0)
        log.info(
            "campaign %s: %s",
            camp.name,
            ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no recipients",
        )
        if self._tty and self._total:
            self._bar = click.progressbar(length=self._total, label="sending", file=sys.stderr)
            self._bar.__enter__()

    def update(self, p: SendProgress) -> None:
        if self._bar is not None:
            self._bar.update(p.done - self._shown)
            self._shown = p.done
            return
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_EVERY:
            self._last_log = now
            elapsed = max(now - p.started, 1e-9)
            log.info(
                "progress: %d/%d done (%d sent, %d failed, %d unknown), %.0f recipients/s",
                p.done,
                self._total,
                p.sent,
                p.failed,
                p.unknown,
                p.done / elapsed,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@cli.command()
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
@db_option
def report_cmd(name: str | None, fmt: str, output: Any, db_url: str) -> None:
    """Show what happened to a campaign (default: the latest one).

    \b
    Examples:
      batch-sender report
      batch-sender report campaign-2026-11-25 --format csv -o results.csv
    """
    from batch_sender.store import Store

    with _errors(), Store.open(db_url) as store:
        if name is None:
            known = store.campaigns()
            if not known:
                raise InputError("no campaigns in this database yet")
            name = max(known, key=lambda c: c.created_at or date.min).name
        built = report.build(store, name)
        if fmt == "json":
            output.write(report.to_json(built) + "\n")
        elif fmt == "csv":
            report.write_csv(store.results(built.campaign.id), output)
        else:
            output.write(report.render_table(built) + "\n")


report_cmd.name = "report"


@cli.command()
@click.argument("name")
@click.option("--resend-unknown", is_flag=True, hidden=True)
@click.option(
    "--gateway-url",
    envvar="BATCH_SENDER_GATEWAY_URL",
    default=DEFAULT_GATEWAY_URL,
    show_default=True,
    help="SOAP endpoint. Env: BATCH_SENDER_GATEWAY_URL.",
)
@db_option
def reconcile(name: str, resend_unknown: bool, gateway_url: str, db_url: str) -> None:
    """Settle 'sending' and 'unknown' recipients of a campaign by asking the gateway (querymsg).

    Rows the gateway never accepted go back to 'pending' (the next run sends them); rows it
    accepted become 'sent'.
    """
    from batch_sender import settle
    from batch_sender.states import Status
    from batch_sender.store import Store

    with _errors(), Store.open(db_url) as store:
        camp = store.campaign(name)
        if camp is None:
            raise InputError(f"no campaign named {name!r}")
        with campaign.open_client(_gateway(gateway_url), max_connections=1) as client:
            stats = settle.settle(
                store, client, camp.id, statuses=(Status.SENDING, Status.UNKNOWN), lease=0.0
            )
        click.echo(
            f"asked about {stats.requests} requests: {stats.sent} sent, "
            f"{stats.requeued} back to pending, {stats.unknown} still unknown"
        )


@cli.command()
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
@click.option("--callback-url", help="Post delivery callbacks here (msg_callback > 0).")
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
    callback_url: str | None,
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
            fault_rates={"http_503": error_rate_5xx, "drop_after": drop_rate},
            callback_url=callback_url,
        )
    )


@cli.group()
def db() -> None:
    """Manage the results database's schema."""


@db.command()
@db_option
def upgrade(db_url: str) -> None:
    """Create or upgrade the results database to the current schema (Alembic)."""
    from batch_sender.store import Store

    with _errors(), Store.open(db_url, upgrade=True):
        click.echo("database is at the current schema")


if __name__ == "__main__":  # pragma: no cover
    main()
