"""``batch-sender run``: stage a campaign and send what is pending."""

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
from batch_sender.cli.common import db_option, errors, gateway_settings
from batch_sender.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
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
from batch_sender.errors import EXIT_INTERRUPTED, InputError
from batch_sender.sender import SendProgress

log = logging.getLogger("batch_sender")

PROGRESS_LOG_EVERY = 10.0  # seconds between progress lines when not on a terminal


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


@click.command()
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
    with errors():
        if sql_file is not None:
            sql = sql_file.read_text(encoding="utf-8")
        if (source_file is None) == (sql is None):
            raise InputError("give exactly one source: a CSV file or --sql/--sql-file")
        if binary and unicode:
            raise InputError("--binary and --unicode do not go together")
        source: sources.Source
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
            gateway_settings(gateway_url, read_timeout=read_timeout),
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
