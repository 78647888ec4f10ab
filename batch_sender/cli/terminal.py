"""A progress bar on the last line of a terminal, with log lines printed above it.

The bar owns the terminal's last line. batch-sender's log handler (:class:`LogHandler`) asks the
bar to step aside for each record: it clears the line (``\\r`` + erase to end of line), writes the
record (which ends with a newline), then draws the bar again below it. Without that, the first
log line during a run would be glued to the end of the bar and the bar redrawn over it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from typing import TextIO

__all__ = ["LogHandler", "ProgressBar"]

CLEAR_LINE = "\r\x1b[K"  # to column 0, erase to the end of the line
REDRAW_EVERY = 0.1  # seconds: the bar is drawn at most this often (log lines redraw it at once)
MIN_BAR_WIDTH = 10  # characters of the bar itself on a narrow terminal
FILL, EMPTY = "#", "-"

_lock = threading.RLock()  # the terminal's last line: the bar, and log lines going above it
_active: ProgressBar | None = None


class ProgressBar:
    """``label [#####-----]  45%  1,350/3,000  1,234/s``, redrawn in place on ``file``."""

    def __init__(self, total: int, *, label: str, file: TextIO) -> None:
        global _active
        self._total = max(total, 0)
        self._label = label
        self._file = file
        self._done = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._closed = False
        with _lock:
            _active = self
            self._draw()

    def update(self, done: int) -> None:
        """``done`` recipients of ``total`` are done; redraw if it is time."""
        with _lock:
            self._done = done
            now = time.monotonic()
            if now - self._drawn_at >= REDRAW_EVERY or done >= self._total:
                self._draw(now)

    def close(self) -> None:
        """Draw the final state and leave it on its own line; log lines then go below it."""
        global _active
        with _lock:
            if self._closed:
                return
            self._closed = True
            self._draw()
            self._file.write("\n")
            self._file.flush()
            if _active is self:
                _active = None

    def line(self) -> str:
        """The bar's text, fitted to the terminal's width."""
        width = shutil.get_terminal_size((80, 24)).columns
        total = self._total or 1
        share = min(self._done / total, 1.0)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        tail = f" {share:4.0%}  {self._done:,}/{self._total:,}  {self._done / elapsed:,.0f}/s"
        room = max(width - len(self._label) - len(tail) - 4, MIN_BAR_WIDTH)
        filled = int(room * share)
        return f"{self._label} [{FILL * filled}{EMPTY * (room - filled)}]{tail}"[: width - 1]

    def clear(self) -> None:
        """Take the bar off the line (the caller holds the lock and writes there next)."""
        self._file.write(CLEAR_LINE)

    def _draw(self, now: float | None = None) -> None:
        self._file.write(CLEAR_LINE + self.line())
        self._file.flush()
        self._drawn_at = time.monotonic() if now is None else now


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stderr handler that prints each record above the progress bar, if one is shown."""

    def emit(self, record: logging.LogRecord) -> None:
        with _lock:
            bar = _active
            if bar is None or bar._file is not self.stream:  # noqa: SLF001 (same module)
                super().emit(record)
                return
            bar.clear()
            super().emit(record)  # the record's line, and its newline
            bar._draw()  # noqa: SLF001
