"""Outcomes the results database could not take, kept in a local file until it can.

When recording fails (disk full, a database restarting) the run keeps what it holds and retries
(``send.coordinator``). Everything it holds is first appended here, one JSON line per request,
and fsynced: so the outcomes survive the process even if the database never comes back during
the run. The next command that opens the store for writing (``run``, ``reconcile``, ``db``,
``report``…: ``Store.open``) applies every journal of that database first, then removes it.

One file per run (``<campaign>-<worker>-<time>.jsonl``) in a directory per database::

    $BATCH_SENDER_JOURNAL_DIR  or  $XDG_STATE_HOME/batch-sender/journal  or
    ~/.local/state/batch-sender/journal   /   <engine>-<database>-<hash of the URL>/

(if that cannot be written: the same under the temporary directory, which apply also reads).
The first line says what the file is; each further line is one request's
``{"c": climsgid, "o": [[row id, status, api id, code, description], …], "r": [ids to
release]}``. A writer holds an exclusive ``flock`` on its file for as long as it lives, and
apply skips a locked file: a journal still being written is never taken from its run.

Applying is idempotent: a row changes only while it is still ``sending``/``unknown`` under the
very request (``client_message_id``) the line names, so a row already final, or claimed again
since, is skipped; a line cut short by a crash is ignored (the rows it held stay ``sending``,
settled with querymsg like any crash's). The file goes only after the apply committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, or_, update
from sqlalchemy.engine import make_url

from batch_sender.states import Status
from batch_sender.store import engine as engines
from batch_sender.store.records import Outcome
from batch_sender.store.tables import (
    API_MESSAGE_ID_LENGTH,
    ERROR_CODE_LENGTH,
    ERROR_DESCRIPTION_LENGTH,
    recipients,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["ENV_DIR", "Journal", "apply_pending", "directories", "pending"]

log = logging.getLogger(__name__)

ENV_DIR = "BATCH_SENDER_JOURNAL_DIR"
FORMAT = 1
_r = recipients.c
_LIVE = (Status.SENDING.value, Status.UNKNOWN.value)

#: One request's part of a journal: its climsgid, its outcomes, the rows to give back.
Entry = tuple[str, Sequence[Outcome], Sequence[int]]


def _database_key(url: str) -> tuple[str, str]:
    """A readable slug and a stable identity for the database ``url`` names (no password)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    if backend == "sqlite" and database and database != ":memory:":
        database = str(Path(database).expanduser().resolve())
        identity = f"sqlite:{database}"
    else:
        identity = f"{backend}://{parsed.username or ''}@{parsed.host or ''}:{parsed.port or ''}"
        identity += f"/{database}?{sorted(parsed.query.items())}"  # (options: a search_path)
    name = Path(database).stem if backend == "sqlite" else database
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{backend}-{name}")[:60]
    return slug, hashlib.sha256(identity.encode()).hexdigest()[:12]


def _base_directory() -> Path:
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "batch-sender" / "journal"


def directories(url: str) -> list[Path]:
    """Where journals of ``url``'s database go: the state directory, then the temporary one."""
    slug, digest = _database_key(url)
    leaf = f"{slug}-{digest}"
    fallback = Path(tempfile.gettempdir()) / f"batch-sender-journal-{os.getuid()}"
    return [_base_directory() / leaf, fallback / leaf]


def _fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Journal:
    """This run's journal: created on the first :meth:`write`, removed by :meth:`discard`."""

    def __init__(self, url: str, campaign_id: int, worker: str) -> None:
        self._url = url
        self._campaign_id = campaign_id
        self._worker = worker
        self._file: IO[str] | None = None
        self.path: Path | None = None
        self.entries = 0  # requests written since the file was created

    def _open(self) -> IO[str]:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        worker = re.sub(r"[^A-Za-z0-9_.-]+", "_", self._worker)[:80]
        errors: list[str] = []
        for directory in directories(self._url):
            path = directory / f"{self._campaign_id}-{worker}-{stamp}.jsonl"
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
            except OSError as exc:
                errors.append(f"{directory}: {exc.strerror or exc}")
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)  # ours while this process lives: apply skips it
            file = os.fdopen(fd, "a", encoding="utf-8")
            header = {
                "journal": FORMAT,
                "db": engines.masked(self._url),
                "campaign": self._campaign_id,
                "worker": self._worker,
                "created": datetime.now(UTC).isoformat(),
            }
            file.write(json.dumps(header) + "\n")
            file.flush()
            os.fsync(fd)
            _fsync_directory(directory)
            self.path = path
            return file
        raise OSError("cannot create a journal: " + "; ".join(errors))

    def write(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` and fsync them: on return they survive this process."""
        if not entries:
            return
        if self._file is None:
            self._file = self._open()
        lines = []
        for climsgid, outcomes, release in entries:
            lines.append(
                json.dumps(
                    {
                        "c": climsgid,
                        "o": [[o[0], str(o[1]), o[2], o[3], o[4]] for o in outcomes],
                        "r": list(release),
                    },
                    separators=(",", ":"),
                )
            )
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.entries += len(entries)

    def discard(self) -> None:
        """Everything written is in the database now: remove the file (then let go of it)."""
        if self._file is None:
            return
        assert self.path is not None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        _fsync_directory(self.path.parent)
        self._file.close()  # closing releases the lock
        self._file = None
        self.path = None
        self.entries = 0

    def close(self) -> None:
        """Let go of the file, keeping it for the next command to apply."""
        if self._file is not None:
            self._file.close()
            self._file = None


def pending(url: str) -> list[Path]:
    """Journals of ``url``'s database waiting to be applied, oldest first."""
    found: list[Path] = []
    for directory in directories(url):
        with contextlib.suppress(OSError):
            found.extend(directory.glob("*.jsonl"))
    return sorted(found, key=lambda p: p.name.split("-")[-1])


def _read(path: Path) -> Iterator[dict[str, Any]]:
    """The entries of a journal; a last line cut short (a crash mid-write) is left out."""
    with path.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:  # a crash while the file was being created: nothing in it
        return
    if not isinstance(header, dict) or header.get("journal") != FORMAT:
        raise ValueError(f"{path}: not a batch-sender journal of format {FORMAT}")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.warning(
                "%s: line %d is cut short (a crash while writing it): left out", path, number
            )
            continue
        yield entry


def _apply_one(engine: Engine, url: str, path: Path) -> tuple[int, int]:
    """Apply one journal in one transaction; (rows written, rows given back)."""
    outcomes: list[dict[str, Any]] = []
    released: list[dict[str, Any]] = []
    for entry in _read(path):
        climsgid = entry["c"]
        for rid, status, api_id, code, why in entry["o"]:
            outcomes.append(
                {
                    "b_id": rid,
                    "b_climsgid": climsgid,
                    "b_status": Status(status).value,
                    "b_api": api_id and api_id[:API_MESSAGE_ID_LENGTH],
                    "b_code": code and code[:ERROR_CODE_LENGTH],
                    "b_why": why and why[:ERROR_DESCRIPTION_LENGTH],
                }
            )
        released.extend({"b_id": rid, "b_climsgid": climsgid} for rid in entry["r"])
    now = datetime.now(UTC)
    written = given_back = 0
    with engines.store_errors("applying a journal", url), engines.begin_write(engine) as conn:
        if outcomes:
            result = conn.execute(
                update(recipients)
                .where(
                    _r.id == bindparam("b_id"),
                    _r.client_message_id == bindparam("b_climsgid"),
                    # (no IN list: an expanding parameter cannot go with executemany)
                    or_(*(_r.status == s for s in _LIVE)),
                )
                .values(
                    status=bindparam("b_status"),
                    api_message_id=bindparam("b_api"),
                    error_code=bindparam("b_code"),
                    error_description=bindparam("b_why"),
                    updated_at=now,
                ),
                outcomes,
            )
            written = max(result.rowcount, 0)
        if released:
            result = conn.execute(
                update(recipients)
                .where(
                    _r.id == bindparam("b_id"),
                    _r.client_message_id == bindparam("b_climsgid"),
                    _r.status == Status.SENDING.value,
                )
                .values(
                    status=Status.PENDING.value,
                    client_message_id=None,
                    claimed_by=None,
                    claimed_at=None,
                    attempts=case((_r.attempts > 0, _r.attempts - 1), else_=0),
                    updated_at=now,
                ),
                released,
            )
            given_back = max(result.rowcount, 0)
    return written, given_back


def apply_pending(engine: Engine, url: str) -> int:
    """Apply every journal of this database that no live run holds; the rows written.

    Each file in a transaction of its own, removed once it committed. A file another process
    holds (a run still retrying its database) is left for later.
    """
    total = 0
    for path in pending(url):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # its run recorded it meanwhile and removed it
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("journal %s is still held by a live run: not applied now", path)
                continue
            if not path.exists():  # removed by its run between the glob and the lock
                continue
            started = time.monotonic()
            try:
                written, given_back = _apply_one(engine, url, path)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("journal %s cannot be read (%s): left in place", path, exc)
                continue
            path.unlink()
            _fsync_directory(path.parent)
            total += written
            log.warning(
                "applied journal %s: %d outcomes recorded, %d rows back to pending "
                "(rows already final were left as they were) in %.2fs",
                path,
                written,
                given_back,
                time.monotonic() - started,
            )
        finally:
            os.close(fd)
    return total
