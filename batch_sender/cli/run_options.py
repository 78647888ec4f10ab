"""The options of ``batch-sender run``, in groups (as sqlite-utils groups shared options).

Each group is one decorator; ``run`` stacks them. Checks that need only the option's own value
(a sender ID's shape, a ``--param``'s rule) are callbacks here; the rest is the library's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from batch_sender.cli.common import LOG_FORMATS
from batch_sender.config import (
    AUTO_CONCURRENCY,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_DB_RETRY,
    DEFAULT_LEASE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PARTS,
    DEFAULT_MAX_PROCESSING,
    DEFAULT_MAX_WAIT,
    MAX_CHUNK_SIZE,
    MAX_CONCURRENCY,
    PARAM_NAMES,
    PARAM_RULES,
    SEND_PROCESS_MIN_ROWS,
    SEND_PROCESS_MODES,
)

__all__ = [
    "ConcurrencyType",
    "message_options",
    "number_options",
    "output_options",
    "schedule_options",
    "sending_options",
    "source_options",
]

F = TypeVar("F", bound=Callable[..., Any])

_SENDER_ID = re.compile(r"[0-9]{1,16}|[A-Za-z0-9]{1,11}")  # <from>: the gateway answers 106 else


def _group(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """Several click decorators as one, applied in the order written (the order of --help)."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def _sender_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _SENDER_ID.fullmatch(value):
        raise click.BadParameter(
            f"{value!r}: a sender ID is up to 16 digits or up to 11 letters and digits"
        )
    return value


#: Where the recipients come from, and the campaign they make.
source_options = _group(
    click.argument(
        "source_file",
        required=False,
        type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    ),
    click.option(
        "--sql",
        help="Read recipients from this SQL query (with --source-db); name the number column "
        '"to" (SELECT phone AS "to") or give --to-column.',
    ),
    click.option(
        "--sql-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the SQL query from a file.",
    ),
    click.option("--source-db", help="SQLAlchemy URL of the database that --sql reads."),
    click.option(
        "--to-column", default="to", show_default=True, help="The column holding numbers."
    ),
    click.option("--delimiter", help="CSV delimiter. Default: sniffed from the file."),
    click.option(
        "--encoding",
        help="The CSV file's encoding (cp1252, latin-1, ...). Default: from its byte-order mark "
        "(UTF-8, UTF-16, UTF-32), else UTF-8.",
    ),
    click.option(
        "--text",
        help="Message text; {column} placeholders are filled from each row. "
        "Default: each row's 'text' column.",
    ),
    click.option(
        "--name",
        help="Campaign name. Default: an existing campaign with the same source (content), text "
        "and options, which is resumed (on any day, in any time zone); else "
        "<source file stem>-<YYYY-MM-DD>.",
    ),
    click.option(
        "--max-rejected",
        type=click.FloatRange(0, 100),
        metavar="PERCENT",
        help="Refuse the file (exit 2, nothing staged or sent) when more than PERCENT of its rows "
        "are unusable (rejected): it is probably the wrong file.",
    ),
    click.option(
        "--new-campaign",
        is_flag=True,
        help="Send as a new campaign even if an existing one has the same source, text and options "
        "(without it, such a campaign is resumed: nothing it sent is sent again). Not with --name.",
    ),
)


#: What is sent: sender, type, encoding, callbacks, extra sendmsg parameters.
message_options = _group(
    click.option(
        "--from",
        "sender",
        callback=_sender_id,
        help="Sender ID (<from>): up to 16 digits or 11 letters/digits.",
    ),
    click.option("--flash", is_flag=True, help="Send as flash SMS (msg_type SMS_FLASH)."),
    click.option(
        "--unicode/--no-unicode",
        default=None,
        help="Force UCS-2 or GSM. Default: GSM when every character fits, else UCS-2.",
    ),
    click.option(
        "--smart-encoding",
        is_flag=True,
        help="Replace curly quotes, dashes, ellipses and odd spaces by their GSM equivalents when "
        "that makes a text GSM (160 characters a part instead of 70). The dry run lists each "
        "character and the parts saved.",
    ),
    click.option("--udh", help="User data header, hex (binary messages)."),
    click.option("--binary", is_flag=True, help="The text is a hex payload (binary message)."),
    click.option(
        "--callback", type=click.IntRange(0, 7), help="Delivery callback level 0-7 (msg_callback)."
    ),
    click.option(
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Another sendmsg parameter, checked before anything is staged: "
        + "; ".join(f"{k} ({PARAM_RULES[k][2]})" for k in sorted(PARAM_NAMES))
        + ". Repeatable.",
    ),
    click.option(
        "--max-parts",
        type=click.IntRange(1, 35),
        default=DEFAULT_MAX_PARTS,
        show_default=True,
        help="Reject texts longer than this many message parts.",
    ),
)


#: How numbers are read (see the number rules in the README).
number_options = _group(
    click.option(
        "--country", help="Default region for national-format numbers (ISO code, e.g. ZA)."
    ),
    click.option(
        "--strict-numbers",
        is_flag=True,
        help="Also reject plain international numbers that phonenumbers says are invalid "
        "(numbers that needed interpretation are always checked).",
    ),
    click.option(
        "--country-column",
        metavar="COLUMN",
        help="A column holding each row's region code (ZA, GB, ...); --country is the fallback.",
    ),
)


class ConcurrencyType(click.ParamType):  # type: ignore[type-arg]
    """``--concurrency``: a number of requests in flight, or ``auto``."""

    name = f"1-{MAX_CONCURRENCY}|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == AUTO_CONCURRENCY:
            return AUTO_CONCURRENCY
        try:
            number = int(value) if not isinstance(value, bool | float) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not 1 <= number <= MAX_CONCURRENCY:
            self.fail(f"{value!r} is not {AUTO_CONCURRENCY!r} or 1-{MAX_CONCURRENCY}", param, ctx)
        return number


#: How fast and how carefully requests go out, and what is resent.
sending_options = _group(
    click.option(
        "--chunk-size",
        type=click.IntRange(1, MAX_CHUNK_SIZE),
        default=DEFAULT_CHUNK_SIZE,
        show_default=True,
        help=(
            "Most recipients per sendmsg request (after a lost answer, one per request "
            "until answers come back whole)."
        ),
    ),
    click.option(
        "--concurrency",
        type=ConcurrencyType(),
        metavar=f"[1-{MAX_CONCURRENCY}|{AUTO_CONCURRENCY}]",
        default=DEFAULT_CONCURRENCY,
        show_default=True,
        help=f"Requests in flight at once: 1-{MAX_CONCURRENCY}, or 'auto': start at 8, grow while "
        "the gateway keeps up, back off when it pushes back (ERR 130, HTTP 429/503) or its "
        "round trip rises; --rate is kept either way.",
    ),
    click.option(
        "--send-process",
        type=click.Choice(SEND_PROCESS_MODES),
        default="auto",
        show_default=True,
        envvar="BATCH_SENDER_SEND_PROCESS",
        help="Send the requests from a second process, so that HTTP and the database each get a "
        f"CPU core: 'auto' does for campaigns of {SEND_PROCESS_MIN_ROWS:,}+ rows.",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(min=0, min_open=True),
        help="Account-wide limit in message parts per second. Default: no limit.",
    ),
    click.option(
        "--max-wait",
        type=click.FloatRange(min=0),
        default=DEFAULT_MAX_WAIT,
        show_default=True,
        help="Longest pause (s) for ERR 130 before the run stops instead.",
    ),
    click.option(
        "--max-attempts",
        type=click.IntRange(1, 50),
        default=DEFAULT_MAX_ATTEMPTS,
        show_default=True,
        help="Tries of one request on retryable errors.",
    ),
    click.option(
        "--read-timeout",
        type=click.FloatRange(min=0.1),
        default=60.0,
        show_default=True,
        help="Seconds to wait for an answer; past it the request's outcome is 'unknown'.",
    ),
    click.option(
        "--lease",
        type=click.FloatRange(min=1),
        default=DEFAULT_LEASE,
        show_default=True,
        help="Seconds a worker's claims survive without its heartbeat; then others settle them.",
    ),
    click.option(
        "--max-processing",
        type=click.FloatRange(min=0),
        default=DEFAULT_MAX_PROCESSING,
        show_default=True,
        help="Seconds the gateway may hold a request before accepting it (default: the default "
        "--read-timeout). Settling an earlier run's requests trusts 'never seen' (ERR 104) only "
        "once this long has passed since they can have left, and waits for it.",
    ),
    click.option(
        "--db-retry",
        type=click.FloatRange(min=0),
        default=DEFAULT_DB_RETRY,
        show_default=True,
        metavar="SECONDS",
        envvar="BATCH_SENDER_DB_RETRY",
        help="When the results database fails mid-run (disk full, a restart), claim nothing new, "
        "hold every outcome (journaled to a local file) and retry this long before stopping "
        "(exit 3); the next run applies the journal first.",
    ),
    click.option(
        "--resend-unknown",
        is_flag=True,
        help="Send 'unknown' recipients again (they may get the message twice).",
    ),
    click.option(
        "--allow-partial",
        is_flag=True,
        help="Start even when the balance (getbalance) is short of the estimated cost; the run "
        "then stops at ERR 301 with the rest pending.",
    ),
)


#: When recipients may be sent: windows, delivery time, validity, expiry.
schedule_options = _group(
    click.option(
        "--window",
        metavar="HH:MM-HH:MM",
        help="Send only between these local times of each recipient (zone from the number; "
        "several zones: open in all). Others wait for a later run.",
    ),
    click.option(
        "--tz",
        metavar="ZONE",
        help="Put every recipient in this IANA zone for --window; also the zone of --at and "
        "--not-after times. Default: from each number; times in the machine's zone.",
    ),
    click.option(
        "--at",
        "at_time",
        metavar="TIME",
        help="Deliver at TIME ('2026-12-01 09:00', at most 7 days ahead): the gateway holds "
        "the messages (deliv_time).",
    ),
    click.option(
        "--validity",
        type=click.IntRange(1, 10080),
        help="Minutes the gateway keeps trying to deliver (validity).",
    ),
    click.option(
        "--not-after",
        metavar="TIME|DURATION",
        help="Rows still pending at TIME, or DURATION after the campaign was staged (6h, 1d12h), "
        "become 'expired' and are never sent.",
    ),
)


#: What the run prints and reports, and where it sends.
output_options = _group(
    click.option(
        "--dry-run",
        is_flag=True,
        help="Count recipients, duplicates and parts; stage nothing, send nothing.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
    click.option(
        "--metrics-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write Prometheus text metrics of the run here (node_exporter textfile collector).",
    ),
    click.option(
        "--heartbeat-url",
        metavar="URL",
        help="GET URL/start when the run starts and URL/<exit code> when it ends "
        "(healthchecks.io style).",
    ),
    click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS),
        help="text or json (one JSON object per line on stderr). Default: the group's setting.",
    ),
    click.option(
        "--simulator",
        is_flag=True,
        help="Start the built-in gateway simulator and send to it (demo, tests).",
    ),
)
