"""``batch-sender run``: stage a campaign and send what is pending."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

import click

from batch_sender import campaign, observe, prepare, report, sources, windows
from batch_sender.cli.common import (
    LOG_FORMATS,
    db_option,
    errors,
    gateway_settings,
    gateway_url_option,
    set_log_format,
)
from batch_sender.config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PARTS,
    DEFAULT_MAX_WAIT,
    MAX_CHUNK_SIZE,
    PARAM_NAMES,
    PARAM_RULES,
    SEND_PROCESS_MIN_ROWS,
    SEND_PROCESS_MODES,
    GatewaySettings,
    MessageOptions,
    RunSettings,
    check_param,
)
from batch_sender.errors import (
    EXIT_GATEWAY_STOP,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    InputError,
    StoreError,
)
from batch_sender.send import scaleout, settle
from batch_sender.send.coordinator import SendProgress

log = logging.getLogger("batch_sender")

PROGRESS_LOG_EVERY = 10.0  # seconds between progress lines when not on a terminal
#: multiplies every retry wait; a hidden knob for fault-injection tests (not an option)
BACKOFF_SCALE_ENV = "BATCH_SENDER_BACKOFF_SCALE"
_SENDER_ID = re.compile(r"[0-9]{1,16}|[A-Za-z0-9]{1,11}")  # <from>: the gateway answers 106 else


def _sender_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _SENDER_ID.fullmatch(value):
        raise click.BadParameter(
            f"{value!r}: a sender ID is up to 16 digits or up to 11 letters and digits"
        )
    return value


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
    help="Campaign name. Default: an existing campaign with the same source (content), text "
    "and options, which is resumed (on any day, in any time zone); else "
    "<source file stem>-<YYYY-MM-DD>.",
)
@click.option(
    "--new-campaign",
    is_flag=True,
    help="Send as a new campaign even if an existing one has the same source, text and options "
    "(without it, such a campaign is resumed: nothing it sent is sent again). Not with --name.",
)
@click.option(
    "--from",
    "sender",
    callback=_sender_id,
    help="Sender ID (<from>): up to 16 digits or 11 letters/digits.",
)
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
    help="Another sendmsg parameter, checked before anything is staged: "
    + "; ".join(f"{k} ({PARAM_RULES[k][2]})" for k in sorted(PARAM_NAMES))
    + ". Repeatable.",
)
@click.option("--country", help="Default region for national-format numbers (ISO code, e.g. ZA).")
@click.option(
    "--strict-numbers",
    is_flag=True,
    help="Also reject plain international numbers that phonenumbers says are invalid "
    "(numbers that needed interpretation are always checked).",
)
@click.option(
    "--country-column",
    metavar="COLUMN",
    help="A column holding each row's region code (ZA, GB, ...); --country is the fallback.",
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
    "--send-process",
    type=click.Choice(SEND_PROCESS_MODES),
    default="auto",
    show_default=True,
    envvar="BATCH_SENDER_SEND_PROCESS",
    help="Send the requests from a second process, so that HTTP and the database each get a "
    f"CPU core: 'auto' does for campaigns of {SEND_PROCESS_MIN_ROWS:,}+ rows.",
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
    "--lease",
    type=click.FloatRange(min=1),
    default=scaleout.DEFAULT_LEASE,
    show_default=True,
    help="Seconds a worker's claims survive without its heartbeat; then others settle them.",
)
@click.option(
    "--max-processing",
    type=click.FloatRange(min=0),
    default=settle.DEFAULT_MAX_PROCESSING,
    show_default=True,
    help="Seconds the gateway may hold a request before accepting it (default: the default "
    "--read-timeout). Settling an earlier run's requests trusts 'never seen' (ERR 104) only "
    "once this long has passed since they can have left, and waits for it.",
)
@click.option(
    "--resend-unknown",
    is_flag=True,
    help="Send 'unknown' recipients again (they may get the message twice).",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Start even when the balance (getbalance) is short of the estimated cost; the run "
    "then stops at ERR 301 with the rest pending.",
)
@click.option(
    "--window",
    metavar="HH:MM-HH:MM",
    help="Send only between these local times of each recipient (zone from the number; "
    "several zones: open in all). Others wait for a later run.",
)
@click.option(
    "--tz",
    metavar="ZONE",
    help="Put every recipient in this IANA zone for --window; also the zone of --at and "
    "--not-after times. Default: from each number; times in the machine's zone.",
)
@click.option(
    "--at",
    "at_time",
    metavar="TIME",
    help="Deliver at TIME ('2026-12-01 09:00', at most 7 days ahead): the gateway holds "
    "the messages (deliv_time).",
)
@click.option(
    "--validity",
    type=click.IntRange(1, 10080),
    help="Minutes the gateway keeps trying to deliver (validity).",
)
@click.option(
    "--not-after",
    metavar="TIME|DURATION",
    help="Rows still pending at TIME, or DURATION after the campaign was staged (6h, 1d12h), "
    "become 'expired' and are never sent.",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write Prometheus text metrics of the run here (node_exporter textfile collector).",
)
@click.option(
    "--heartbeat-url",
    metavar="URL",
    help="GET URL/start when the run starts and URL/<exit code> when it ends "
    "(healthchecks.io style).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="text or json (one JSON object per line on stderr). Default: the group's setting.",
)
@click.option(
    "--simulator",
    is_flag=True,
    help="Start the built-in gateway simulator and send to it (demo, tests).",
)
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
    concurrency: int,
    send_process: str,
    rate: float | None,
    max_wait: float,
    max_attempts: int,
    max_parts: int,
    read_timeout: float,
    dry_run: bool,
    as_json: bool,
    lease: float,
    max_processing: float,
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

      batch-sender run daily.csv --window 08:00-20:00 --not-after 1d --metrics-file m.prom

    Exit codes: 0 all accepted; 1 some failed or rejected; 2 usage/input error (nothing sent);
    3 stopped by the gateway (auth, credit); 4 some outcomes unknown; 130 interrupted (resumable).
    """
    if log_format is not None:
        set_log_format(log_format)
    watch = _Watch(None if dry_run else metrics_file, None if dry_run else heartbeat_url)
    watch.start()
    code = EXIT_USAGE
    result: campaign.RunResult | None = None
    try:
        with errors():
            controls = _controls(window=window, tz=tz, not_after=not_after)
            extra_params = _schedule(at_time, validity, params, controls.zone)
            auto_name = name is None and sql is None and sql_file is None
            source, name = _open_source(
                source_file, sql, sql_file, source_db, name, to_column, delimiter
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
            )
            watch.campaign = name
            if dry_run:
                _dry_run(settings, source, db_url, as_json=as_json)
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
        code = EXIT_OK_CODE if result is None else result.exit_code
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
    source = sources.open_csv(source_file, to_column=to_column, delimiter=delimiter)
    return source, name or f"{source_file.stem}-{date.today().isoformat()}"


def _dry_run(settings: RunSettings, source: sources.Source, db_url: str, *, as_json: bool) -> None:
    """Count what a run would do and print it; nothing is staged or sent."""
    report_ = prepare.dry_run(
        source,
        prepare.Preparer(settings, source.columns),
        chunk_size=settings.chunk_size,
        suppressed=_suppressed_numbers(db_url),
    )
    source.close()
    data = report_.as_dict()
    if as_json:
        click.echo(json.dumps(data))
    else:
        for key, value in data.items():
            if key not in ("numbers_interpreted", "countries"):
                click.echo(f"{key}: {value}")
        _echo_numbers(report_)


def _echo_numbers(report_: prepare.DryRunReport) -> None:
    """The dry run's account of how numbers were read, and where the accepted ones go."""
    interpreted = report_.numbers_interpreted
    click.echo("numbers_interpreted:" + ("" if interpreted else " none"))
    for rule, seen in interpreted.items():
        examples = seen["examples"]
        assert isinstance(examples, list)
        shown = ", ".join(f"{raw!r} -> {digits}" for raw, digits in examples)
        click.echo(f"  {rule}: {seen['count']} (e.g. {shown})")
    countries = ", ".join(f"{c} {n}" for c, n in report_.countries.most_common())
    click.echo(f"countries: {countries or 'none'}")


def _send(
    settings: RunSettings,
    source: sources.Source,
    db_url: str,
    gateway: GatewaySettings,
    *,
    simulator: bool,
    as_json: bool,
    lease: float = scaleout.DEFAULT_LEASE,
    controls: _Controls | None = None,
    max_processing: float = settle.DEFAULT_MAX_PROCESSING,
    naming: str | None = None,
) -> campaign.RunResult:
    """``naming``: "find" the campaign by its content, make a "new" one, or None (--name)."""
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
        if naming is not None:
            chosen = campaign.choose_name(store, source, settings, new=naming == "new")
            settings = dataclasses.replace(settings, name=chosen)
        if controls is not None:
            store.before_claim = controls.gate(store)
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
            lease=lease,
            max_processing=max_processing,
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
        waiting = result.counts.get("pending", 0)
        if waiting and not result.interrupted and result.stop_reason is None:
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


class _Progress:
    """A progress bar on a terminal; a log line every few seconds otherwise (cron mails those)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._total = 0
        self._bar: Any = None
        self._last_log = 0.0
        self._shown = 0
        self._current: SendProgress | None = None
        self._before = 0  # recipients done by earlier sends of this run (a run may send twice)
        self._started = time.monotonic()

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
        self._started = self._last_log = time.monotonic()  # first progress line after a pause
        if self._tty and self._total:
            self._bar = click.progressbar(length=self._total, label="sending", file=sys.stderr)
            self._bar.__enter__()

    def update(self, p: SendProgress) -> None:
        if p is not self._current:
            if self._current is not None:
                self._before += self._current.done
            self._current = p
        done = self._before + p.done
        if self._bar is not None:
            self._bar.update(done - self._shown)
            self._shown = done
            return
        now = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_EVERY:
            self._last_log = now
            elapsed = max(now - p.started, 1e-9)
            log.info(
                "progress: %d/%d done (%d sent, %d failed, %d unknown), %.0f recipients/s",
                done,
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
        if self._current is not None:
            done = self._before + self._current.done
            elapsed = max(time.monotonic() - self._started, 1e-9)
            log.info(
                "sent %d recipients in %.1fs (%.0f recipients/s, %d requests, %d retries)",
                done,
                elapsed,
                done / elapsed,
                self._current.requests,
                self._current.retries,
            )
            self._current = None


EXIT_OK_CODE = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _Controls:
    """Send windows and --not-after, parsed; ``gate`` installs them on a store."""

    window: windows.Window | None = None
    zone: tzinfo | None = None  # --tz
    not_after: windows.Deadline | None = None

    def gate(self, store: Any) -> windows.ClaimGate | None:
        if self.window is None and self.not_after is None:
            return None
        return windows.ClaimGate(
            store, window=self.window, zone=self.zone, not_after=self.not_after
        )


def _controls(*, window: str | None, tz: str | None, not_after: str | None) -> _Controls:
    zone = windows.parse_zone(tz) if tz else None
    return _Controls(
        window=windows.Window.parse(window) if window else None,
        zone=zone,
        not_after=(
            windows.parse_deadline(not_after, zone=zone or windows.local_zone())
            if not_after
            else None
        ),
    )


def _schedule(
    at_time: str | None, validity: int | None, params: tuple[str, ...], zone: tzinfo | None
) -> tuple[tuple[str, str], ...]:
    """--at and --validity as sendmsg parameters (deliv_time in minutes from now, validity)."""
    given = {item.partition("=")[0] for item in params}
    out: list[tuple[str, str]] = []
    if at_time is not None:
        if "deliv_time" in given:
            raise InputError("--at and --param deliv_time=… do not go together")
        at = windows.parse_time(at_time, zone=zone or windows.local_zone(), option="--at")
        out.append(("deliv_time", str(windows.deliv_minutes(at, windows.utcnow()))))
    if validity is not None:
        if "validity" in given:
            raise InputError("--validity and --param validity=… do not go together")
        out.append(("validity", str(validity)))
    return tuple(out)


def _suppressed_numbers(db_url: str) -> frozenset[str]:
    """The suppression list for a dry run, which must not create or migrate anything."""
    from sqlalchemy.engine import make_url

    from batch_sender.store import Store
    from batch_sender.store import operators as store_operators

    try:
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and (
            not url.database or not Path(url.database).exists()
        ):
            return frozenset()
        with Store.open(db_url, upgrade=False) as store:
            return store_operators.suppressed_numbers(store)
    except (StoreError, ValueError) as exc:
        log.warning("suppression list not read (counted as empty): %s", exc)
        return frozenset()


class _Watch:
    """Monitoring of one run: heartbeat pings at start and end, the metrics file at the end."""

    def __init__(self, metrics_file: Path | None, heartbeat_url: str | None) -> None:
        self.metrics_file = metrics_file
        self.heartbeat_url = heartbeat_url
        self.campaign: str | None = None
        self.started = time.time()

    def start(self) -> None:
        self.started = time.time()
        if self.heartbeat_url:
            observe.ping(self.heartbeat_url, "start")

    def finish(self, code: int, result: campaign.RunResult | None) -> None:
        if self.metrics_file is not None:
            if result is None:  # raised: the exit code says why
                outcome = {EXIT_GATEWAY_STOP: "stopped", EXIT_INTERRUPTED: "interrupted"}.get(
                    code, "error"
                )
            elif result.interrupted:
                outcome = "interrupted"
            elif result.stop_reason is not None:
                outcome = "stopped"
            else:
                outcome = "finished"
            metrics = observe.RunMetrics(
                campaign=result.campaign if result else (self.campaign or ""),
                exit_code=code,
                outcome=outcome,
                started=self.started,
                finished=time.time(),
                counts=result.counts if result else {},
                parts=result.parts if result else 0,
                requests=result.progress.requests if result else 0,
                retries=result.progress.retries if result else 0,
            )
            try:
                observe.write_metrics(self.metrics_file, metrics)
            except OSError as exc:
                log.error("cannot write the metrics file %s: %s", self.metrics_file, exc)
        if self.heartbeat_url:
            observe.ping(self.heartbeat_url, str(code))
