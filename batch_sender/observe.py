"""Watching unattended runs: Prometheus textfile metrics, JSON log lines, heartbeat pings.

- :func:`write_metrics` writes one run's figures in Prometheus' text format, atomically (a temp
  file in the same directory, then ``rename``), for node_exporter's textfile collector.
- :class:`JsonFormatter` makes each log record one JSON object (for log shippers).
- :func:`ping` GETs a healthchecks-style URL: ``URL/start`` when a run starts, ``URL/<exit
  code>`` when it ends (``/0`` is success; healthchecks.io reads any other as a failure). A ping
  that fails is logged and never fails the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batch_sender.errors import EXIT_GATEWAY_STOP, EXIT_INTERRUPTED
from batch_sender.states import CampaignControl, CampaignStatus, Status

if TYPE_CHECKING:
    from batch_sender.campaign import RunResult

__all__ = [
    "HEARTBEAT_TIMEOUT",
    "JsonFormatter",
    "RunMetrics",
    "RunWatch",
    "ping",
    "render_metrics",
    "write_metrics",
]

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 5.0  # seconds: a monitoring ping must never hold up a run
PREFIX = "batch_sender"


@dataclass(slots=True)
class RunMetrics:
    """The figures of one run of one campaign (counts are the campaign's, all runs)."""

    campaign: str
    exit_code: int
    outcome: str  # finished, stopped, interrupted, error
    started: float  # epoch seconds
    finished: float  # epoch seconds
    counts: Mapping[str, int] = field(default_factory=dict)  # recipients by status
    parts: int = 0
    requests: int = 0  # this run
    retries: int = 0  # this run


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(m: RunMetrics) -> str:
    """Prometheus text exposition format (0.0.4) for one run."""
    c = f'campaign="{_label(m.campaign)}"'
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}_{name} {kind}")
        for labels, value in samples:
            lines.append(f"{PREFIX}_{name}{{{labels}}} {value:g}")

    family(
        "recipients",
        "gauge",
        "Recipients of the campaign by status.",
        [(f'{c},status="{s.value}"', float(m.counts.get(s.value, 0))) for s in Status],
    )
    family(
        "message_parts", "gauge", "Message parts (credits) accepted for sending.", [(c, m.parts)]
    )
    family("run_requests", "gauge", "sendmsg requests made by the last run.", [(c, m.requests)])
    family("run_retries", "gauge", "Retried requests in the last run.", [(c, m.retries)])
    family(
        "run_duration_seconds", "gauge", "Wall time of the last run.", [(c, m.finished - m.started)]
    )
    family("run_exit_code", "gauge", "Exit code of the last run (0 = success).", [(c, m.exit_code)])
    family(
        "run_outcome",
        "gauge",
        "1 for how the last run ended (finished, stopped, interrupted, error).",
        [
            (f'{c},outcome="{o}"', 1.0 if o == m.outcome else 0.0)
            for o in (
                CampaignStatus.FINISHED,
                CampaignStatus.STOPPED,
                CampaignStatus.INTERRUPTED,
                "error",
            )
        ],
    )
    family(
        "run_last_timestamp_seconds",
        "gauge",
        "When the last run ended (Unix time).",
        [(c, m.finished)],
    )
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, m: RunMetrics) -> None:
    """Write :func:`render_metrics` to ``path`` atomically: readers see the old or the new file."""
    text = render_metrics(m)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # the collector often runs as another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (+ exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def ping(url: str, suffix: str = "", *, timeout: float = HEARTBEAT_TIMEOUT) -> bool:
    """GET ``url`` + ``/suffix``; True on a 2xx answer. Failures are logged, never raised."""
    import httpx

    target = url.rstrip("/") + (f"/{suffix}" if suffix else "")
    try:
        response = httpx.get(target, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        log.warning("heartbeat %s failed: %s", _masked(target), exc)
        return False
    if response.is_success:
        return True
    log.warning("heartbeat %s answered HTTP %d", _masked(target), response.status_code)
    return False


def _masked(url: str) -> str:
    """The URL without its path (healthchecks' path is a secret UUID)."""
    import httpx

    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}/…"


#: how a run that raised ended, by its exit code
_RAISED_OUTCOMES: dict[int, str] = {
    EXIT_GATEWAY_STOP: CampaignStatus.STOPPED,
    EXIT_INTERRUPTED: CampaignStatus.INTERRUPTED,
}


class RunWatch:
    """Monitoring of one run: heartbeat pings at start and end, the metrics file at the end."""

    def __init__(self, metrics_file: Path | None, heartbeat_url: str | None) -> None:
        self.metrics_file = metrics_file
        self.heartbeat_url = heartbeat_url
        self.campaign: str | None = None
        self.started = time.time()

    def start(self) -> None:
        self.started = time.time()
        if self.heartbeat_url:
            ping(self.heartbeat_url, "start")

    def finish(self, code: int, result: RunResult | None) -> None:
        """The end ping and the metrics file; ``result`` None when the run raised."""
        if self.metrics_file is not None:
            if result is not None:
                paused = result.halted == CampaignControl.PAUSED
                outcome: str = CampaignControl.PAUSED if paused else result.outcome
            else:  # raised: the exit code says why
                outcome = _RAISED_OUTCOMES.get(code, "error")
            metrics = RunMetrics(
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
                write_metrics(self.metrics_file, metrics)
            except OSError as exc:
                log.error("cannot write the metrics file %s: %s", self.metrics_file, exc)
        if self.heartbeat_url:
            ping(self.heartbeat_url, str(code))
