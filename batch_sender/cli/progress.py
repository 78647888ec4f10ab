"""What a run shows while it sends: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from batch_sender.cli import terminal
from batch_sender.cli.common import quiet

if TYPE_CHECKING:
    from batch_sender.send.coordinator import SendProgress

__all__ = ["PROGRESS_LOG_EVERY", "Progress"]

log = logging.getLogger("batch_sender")

PROGRESS_LOG_EVERY = 10.0  # seconds between progress lines when not on a terminal


class Progress:
    """A progress bar on a terminal; a log line every few seconds otherwise (cron mails those)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty() and not quiet()
        self._total = 0
        self._bar: terminal.ProgressBar | None = None
        self._last_log = 0.0
        self._current: SendProgress | None = None
        self._before = 0  # recipients done by earlier sends of this run (a run may send twice)
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
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
            self._bar = terminal.ProgressBar(self._total, label="sending", file=sys.stderr)

    def update(self, p: SendProgress) -> None:
        if p is not self._current:
            if self._current is not None:
                self._before += self._current.done
            self._current = p
        done = self._before + p.done
        if self._bar is not None:
            self._bar.update(done)
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
            self._bar.close()
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
