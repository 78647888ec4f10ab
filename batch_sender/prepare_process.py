"""Preparing a large CSV file's rows in a process of its own, while this one writes them.

Staging a campaign is two kinds of work: reading and preparing each row (the CSV reader, the
number rules, the text's encoding and digest, the row's JSON) and writing it to the results
database. In one process they take turns on one core; a million rows of one text spend about a
third of staging preparing, a million distinct texts most of it. For a CSV file of at least
:data:`MIN_BYTES` (:data:`MIN_BYTES_RENDERED` when each row's text is rendered) on a machine
with a second core, :func:`staged_rows` starts ``python -m
batch_sender.prepare_process``, which opens the same file, prepares its rows with the same
settings and hands them over in batches, while this process inserts the previous batch.

Nothing about what is staged changes: the same rows in the same order, the same reasons, the
same errors at the same row (an ``InputError`` from the child is raised here, inside the
staging transaction, which then rolls back whole), and the child's counts (number
interpretations, ``--smart-encoding``, non-GSM characters) added to the caller's preparer at the
end. Everything is still written, in one transaction, before the first request is sent: the
child only reads the file. If the child ends before its last row, staging fails (exit 2,
nothing staged); if this process ends, the kernel ends the child.

The two processes speak pickle: spec in (``PrepareSpec``), then out ``("rows", [row, …])`` for
each batch (:data:`StagedValues` tuples), and one last message, ``("done", Tallies)``,
``("refused", text)`` (bad input: an ``InputError``) or ``("failed", traceback)`` (a bug).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batch_sender import child_process
from batch_sender.config import RunSettings
from batch_sender.errors import BatchSenderError, InputError
from batch_sender.prepare import Preparer, Tallies
from batch_sender.sources.base import Source
from batch_sender.sources.csvfile import CsvSource
from batch_sender.staged import StagedValues

__all__ = ["MIN_BYTES", "MIN_BYTES_RENDERED", "PrepareSpec", "staged_rows"]

log = logging.getLogger(__name__)

#: a CSV file at least this large is prepared in a process of its own (about 110,000 rows of a
#: number and two short columns); below it, the child's start-up (~0.2 s) outweighs the gain
MIN_BYTES = 4 * 1024 * 1024
#: the same when every row's text is rendered and encoded (about 28,000 such rows): preparing
#: a row is then 18 µs, not 4 (see docs/PERFORMANCE.md)
MIN_BYTES_RENDERED = 1024 * 1024
#: rows per message from the child: large enough that pickling is per batch, not per row
BATCH_ROWS = 2000
#: how the preparing process is started (its module's ``__main__``)
CHILD_COMMAND = child_process.command("batch_sender.prepare_process")
#: bytes the pipe from the child holds (Linux): a few batches, so neither side waits for the
#: other's every turn
_PIPE_BYTES = 1024 * 1024
_PROTOCOL = pickle.HIGHEST_PROTOCOL


@dataclass(frozen=True, slots=True)
class PrepareSpec:
    """What the child needs to read the same file the same way and prepare it alike."""

    path: Path
    display: str
    to_column: str
    delimiter: str
    encoding: str
    settings: RunSettings


def staged_rows(
    source: Source, settings: RunSettings, preparer: Preparer
) -> Generator[StagedValues, None, None]:
    """``preparer.staged(source.records())``, prepared in a process of its own when that pays:
    a CSV file of at least :data:`MIN_BYTES` (:data:`MIN_BYTES_RENDERED` if each row's text is
    rendered) and a second core (see the module docstring).

    The child starts at the first row asked for, and is ended when the iterator is closed or
    let go, at its end or not.
    """
    if not _worth_a_process(source, preparer.renders_each_row):
        return preparer.staged(source.records())
    assert isinstance(source, CsvSource)
    spec = PrepareSpec(
        path=source.path,
        display=source.description,
        to_column=source.to_column,
        delimiter=source.delimiter,
        encoding=source.encoding,
        settings=settings,
    )
    return _from_child(spec, source, preparer)


def _worth_a_process(source: Source, rendered: bool) -> bool:
    if not isinstance(source, CsvSource) or len(os.sched_getaffinity(0)) < 2:
        return False
    try:
        return source.path.stat().st_size >= (MIN_BYTES_RENDERED if rendered else MIN_BYTES)
    except OSError:
        return False  # read in this process, which then says what is wrong


def _from_child(
    spec: PrepareSpec, source: Source, preparer: Preparer
) -> Generator[StagedValues, None, None]:
    """The child's rows as they come; at the end, its counts added to ``preparer``."""
    try:
        child = subprocess.Popen(
            CHILD_COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_process.environment(),
        )
    except OSError as exc:
        log.debug("preparing in this process: the preparing process did not start (%s)", exc)
        yield from preparer.staged(source.records())
        return
    assert child.stdin is not None and child.stdout is not None
    inbox: IO[bytes] = child.stdout
    with contextlib.suppress(OSError, AttributeError):  # a larger pipe (Linux) only helps
        fcntl.fcntl(inbox.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    try:
        with contextlib.suppress(OSError):  # a child dead at once: its end of output says so
            pickle.dump(spec, child.stdin, _PROTOCOL)
            child.stdin.close()
        while True:
            try:
                message = pickle.load(inbox)
            except Exception as exc:  # its end of output, or a garbled stream: it is over
                raise _ended(child, exc) from None
            kind = message[0]
            if kind == "rows":
                yield from message[1]
            elif kind == "done":
                preparer.add_tallies(message[1])
                return
            elif kind == "refused":
                raise InputError(message[1])
            else:
                raise BatchSenderError(
                    f"preparing the rows failed, nothing was staged:\n{message[1]}"
                )
    finally:  # the end, an error, or the caller gave up (staging rolled back): no child left
        if child.poll() is None:
            child.kill()
        child.wait()
        inbox.close()


def _ended(child: subprocess.Popen[bytes], exc: BaseException) -> BatchSenderError:
    code = child.wait()
    return BatchSenderError(
        f"the process preparing the rows ended before the last row (exit status {code}, {exc!r});"
        " nothing was staged: run the same command again"
    )


# --- the child --------------------------------------------------------------------------------


def child_main() -> int:
    """The preparing process: read the spec from stdin, write prepared rows to stdout."""
    if not child_process.adopt():
        return 1
    outbox = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but our messages may reach the parent's pipe
    spec: PrepareSpec = pickle.load(sys.stdin.buffer)
    try:
        last: tuple[Any, ...] = ("done", _prepare(spec, outbox))
    except BrokenPipeError:
        return 0  # the parent stopped reading: staging is over
    except InputError as exc:
        last = ("refused", str(exc))
    except Exception:
        last = ("failed", traceback.format_exc())
    with contextlib.suppress(BrokenPipeError):
        pickle.dump(last, outbox, _PROTOCOL)
        outbox.flush()
    return 0


def _prepare(spec: PrepareSpec, outbox: IO[bytes]) -> Tallies:
    with CsvSource(
        spec.path,
        spec.display,
        to_column=spec.to_column,
        delimiter=spec.delimiter,
        encoding=spec.encoding,
        allow_empty=True,  # the parent has checked: this is the same file
    ) as source:
        preparer = Preparer(spec.settings, source.columns)
        rows = preparer.staged(source.records())
        while batch := list(itertools.islice(rows, BATCH_ROWS)):
            pickle.dump(("rows", batch), outbox, _PROTOCOL)
            outbox.flush()
        return preparer.tallies()


if __name__ == "__main__":
    # run the module's own copy, not __main__'s: the pickled classes name this module
    from batch_sender.prepare_process import child_main as main

    raise SystemExit(main())
