"""``batch-sender run``: stage a campaign and send what is pending."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from batch_sender import observe
from batch_sender.cli import dryrun, outcome
from batch_sender.cli.common import (
    LazyModule,
    check_writable,
    db_option,
    errors,
    gateway_settings,
    gateway_url_option,
    open_store,
    quiet,
    set_log_format,
)
from batch_sender.cli.progress import Progress
from batch_sender.cli.run_options import (
    message_options,
    number_options,
    output_options,
    schedule_options,
    sending_options,
    source_options,
)
from batch_sender.config import (
    DEFAULT_LEASE,
    DEFAULT_MAX_PROCESSING,
    GatewaySettings,
    MessageOptions,
    RunSettings,
    check_param,
)
from batch_sender.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
)

if TYPE_CHECKING:
    from batch_sender import campaign, prepare, report, sources, suppression, windows
else:  # imported when a command runs, not for --help
    campaign = LazyModule("batch_sender.campaign")
    prepare = LazyModule("batch_sender.prepare")
    report = LazyModule("batch_sender.report")
    sources = LazyModule("batch_sender.sources")
    suppression = LazyModule("batch_sender.suppression")
    windows = LazyModule("batch_sender.windows")

log = logging.getLogger("batch_sender")

#: multiplies every retry wait; a hidden knob for fault-injection tests (not an option)
BACKOFF_SCALE_ENV = "BATCH_SENDER_BACKOFF_SCALE"


def _backoff_scale() -> float:
    raw = os.environ.get(BACKOFF_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 100:
        raise InputError(f"{BACKOFF_SCALE_ENV}={raw!r}: expected a number in (0, 100]")
    return value


def _params(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in values:
        key, sep, value = item.partition("=")
        why = "expected KEY=VALUE" if not sep else check_param(key, value)
        if why is not None:
            raise click.BadParameter(f"{item!r}: {why}", param_hint="--param")
        out.append((key, value.strip()))
    return tuple(out)


@click.command()
@source_options
@message_options
@number_options
@sending_options
@schedule_options
@output_options
@gateway_url_option
@db_option
def run(
    source_file: Path | None,
    sql: str | None,
    sql_file: Path | None,
    source_db: str | None,
    text: str | None,
    name: str | None,
    new_campaign: bool,
    sender: str | None,
    flash: bool,
    unicode: bool | None,
    udh: str | None,
    binary: bool,
    callback: int | None,
    params: tuple[str, ...],
    country: str | None,
    strict_numbers: bool,
    country_column: str | None,
    to_column: str,
    delimiter: str | None,
    chunk_size: int,
    concurrency: int | str,
    send_process: str,
    rate: float | None,
    max_wait: float,
    max_attempts: int,
    max_parts: int,
    read_timeout: float,
    dry_run: bool,
    as_json: bool,
    max_rejected: float | None,
    lease: float,
    max_processing: float,
    db_retry: float,
    resend_unknown: bool,
    allow_partial: bool,
    window: str | None,
    tz: str | None,
    at_time: str | None,
    validity: int | None,
    not_after: str | None,
    metrics_file: Path | None,
    heartbeat_url: str | None,
    log_format: str | None,
    simulator: bool,
    smart_encoding: bool,
    encoding: str | None,
    gateway_url: str,
    db_url: str,
) -> None:
    """Send one campaign: stage every recipient, then send what is pending.

    \b
    Examples:
      batch-sender run campaign.csv --text "Hi {name}, your order shipped" --country ZA
      batch-sender run --sql 'SELECT phone AS "to", name FROM customers' \\
          --source-db postgresql://reader@db/crm --name crm-2026-11-25 --text "Hi {name}"
      batch-sender run --sql "SELECT phone, name FROM customers" --to-column phone \\
          --source-db mysql://reader@db/crm --name crm-2026-11-25 --text "Hi {name}"
      export-customers | batch-sender run - --name crm-2026-11-25 --text "Hi {name}"
      batch-sender run campaign.csv --text "Hello" --dry-run --json

      batch-sender run daily.csv --window 08:00-20:00 --not-after 1d --metrics-file m.prom

    Exit codes: 0 every sendable recipient accepted (rejected, duplicate and suppressed rows
    are reported, not failures; also a re-run with nothing left to send); 1 the gateway refused
    some; 2 usage/input error (nothing sent); 3 stopped, resumable (gateway: auth, credit,
    unreachable; paused; or the results database failed for longer than --db-retry: the
    message names the journal the next run applies); 4 some outcomes unknown; 130 interrupted.
    """
    if log_format is not None:
        set_log_format(log_format)
    watch = observe.RunWatch(None if dry_run else metrics_file, None if dry_run else heartbeat_url)
    watch.start()
    code = EXIT_USAGE
    result: campaign.RunResult | None = None
    try:
        with errors():
            check_writable(None if dry_run else metrics_file, "metrics file")
            controls = windows.controls(window=window, tz=tz, not_after=not_after)
            extra_params = windows.schedule_params(at_time, validity, params, controls.zone)
            auto_name = name is None and sql is None and sql_file is None
            source, name = _open_source(
                source_file, sql, sql_file, source_db, name, to_column, delimiter, encoding
            )
            if binary and unicode:
                raise InputError("--binary and --unicode do not go together")
            if new_campaign and not auto_name:
                raise InputError("--new-campaign is for a CSV run without --name")
            settings = RunSettings(
                name=name,
                text=text,
                country=country,
                strict_numbers=strict_numbers,
                country_column=country_column,
                message=MessageOptions(
                    sender=sender,
                    flash=flash,
                    unicode=unicode,
                    udh=udh,
                    binary=binary,
                    callback=callback,
                    params=_params(params) + extra_params,
                    max_parts=max_parts,
                    smart_encoding=smart_encoding,
                ),
                chunk_size=chunk_size,
                concurrency=concurrency,
                send_process=send_process,
                rate=rate,
                max_wait=max_wait,
                max_attempts=max_attempts,
                resend_unknown=resend_unknown,
                allow_partial=allow_partial,
                backoff_scale=_backoff_scale(),
                max_rejected=max_rejected,
                db_retry=db_retry,
            )
            watch.campaign = name
            if dry_run:
                dryrun.show(settings, source, db_url, as_json=as_json)
            else:
                result = _send(
                    settings,
                    source,
                    db_url,
                    gateway_settings(gateway_url, read_timeout=read_timeout),
                    simulator=simulator,
                    as_json=as_json,
                    lease=lease,
                    controls=controls,
                    max_processing=max_processing,
                    naming="new" if new_campaign else "find" if auto_name else None,
                )
        code = EXIT_OK if result is None else result.exit_code
    except click.ClickException as exc:
        code = exc.exit_code
        raise
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        raise
    finally:
        watch.finish(code, result)
    sys.exit(code)


def _open_source(
    source_file: Path | None,
    sql: str | None,
    sql_file: Path | None,
    source_db: str | None,
    name: str | None,
    to_column: str,
    delimiter: str | None,
    encoding: str | None = None,
) -> tuple[sources.Source, str]:
    """The recipients' source (validated: header, number column) and the campaign's name."""
    if sql_file is not None:
        sql = sql_file.read_text(encoding="utf-8")
    if (source_file is None) == (sql is None):
        raise InputError("give exactly one source: a CSV file or --sql/--sql-file")
    if sql is not None:
        if not source_db:
            raise InputError("--sql needs --source-db URL")
        if not name:
            raise InputError("--sql needs --name (there is no file name to derive it from)")
        return sources.open_sql(source_db, sql, to_column=to_column), name
    assert source_file is not None
    if str(source_file) == "-":
        if not name:
            raise InputError("reading standard input (-) needs --name (there is no file name)")
        return (
            sources.open_csv_stream(
                sys.stdin.buffer, to_column=to_column, delimiter=delimiter, encoding=encoding
            ),
            name,
        )
    source = sources.open_csv(
        source_file, to_column=to_column, delimiter=delimiter, encoding=encoding
    )
    return source, name or f"{source_file.stem}-{date.today().isoformat()}"


def _send(
    settings: RunSettings,
    source: sources.Source,
    db_url: str,
    gateway: GatewaySettings,
    *,
    simulator: bool,
    as_json: bool,
    lease: float = DEFAULT_LEASE,
    controls: windows.Controls | None = None,
    max_processing: float = DEFAULT_MAX_PROCESSING,
    naming: str | None = None,
) -> campaign.RunResult:
    """``naming``: "find" the campaign by its content, make a "new" one, or None (--name)."""
    from batch_sender.prepare import Preparer

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
        store = stack.enter_context(open_store(db_url, "create"))
        if naming is not None:
            chosen = campaign.choose_name(store, source, settings, new=naming == "new")
            settings = dataclasses.replace(settings, name=chosen)
        client = stack.enter_context(
            campaign.open_client(gateway, max_connections=campaign.threads_for(settings))
        )
        stop = threading.Event()
        stack.enter_context(_signals(stop))
        display = stack.enter_context(Progress())
        result = campaign.run(
            settings,
            source=source,
            store=store,
            client=client,
            preparer=preparer,
            stop=stop,
            progress=display.update,
            on_staged=display.staged,
            lease=lease,
            max_processing=max_processing,
            controls=controls,
        )
        display.close()
        if preparer.smart.rows and preparer.smart.enabled:
            log.info("%s", dryrun.smart_summary(preparer.smart))
        if as_json:
            click.echo(json.dumps(result.as_dict()))
        elif result.nothing_to_do:
            if not quiet():
                click.echo(outcome.nothing_to_do(result))
        else:
            if not quiet():
                click.echo(report.render_table(report.build(store, result.campaign)))
            if result.stop_reason:
                click.echo(f"stopped: {result.stop_reason}", err=True)
            if result.interrupted:
                click.echo("interrupted: run the same command again to resume", err=True)
        outcome.warn_if_needed(result)
        waiting = result.counts.get("pending", 0)
        if waiting and result.exit_code == 0:
            log.info("%d recipients wait (send window): the next run sends them", waiting)
        return result


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
