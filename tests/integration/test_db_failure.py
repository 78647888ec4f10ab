"""The results database fails mid-run: nothing is lost, nothing is sent twice (issue 16, 1-2).

Real parts only: the console script in a subprocess, the simulator over HTTP (with latency, so a
run lasts a few seconds, and refusing some numbers with ERR 105), and a real database that fails
under it:

* SQLite on a small tmpfs that is filled to the last byte mid-run, then freed (needs root for
  ``mount``; skipped otherwise);
* a private PostgreSQL cluster (initdb + pg_ctl into a temporary directory, on a port of its
  own: the shared server is never touched) restarted mid-run, or stopped for good;
* another SQLite writer holding the write lock for a while.

Each checks both ledgers: every number the gateway accepted is ``sent`` exactly once, none was
accepted twice, none it refused is ``sent``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.slow

ROWS = 2000
CHUNK = "10"
LATENCY_MS = 40  # 200 requests over 4 connections: about 2-3 s of sending
REFUSED = 25  # numbers the gateway refuses (ERR 105): they must end `failed`, never `sent`


def _exe() -> str:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    return exe


def _numbers(n: int) -> list[str]:
    return [str(27821000000 + i) for i in range(n)]


class Run:
    """One campaign file, one simulator, one database URL, one journal directory."""

    def __init__(self, tmp_path: Path, make_simulator: Callable[..., Any], db_url: str) -> None:
        numbers = _numbers(ROWS)
        self.refused = set(numbers[7 :: ROWS // REFUSED][:REFUSED])
        self.record = tmp_path / "record.jsonl"
        self.sim = make_simulator(
            latency_ms=LATENCY_MS,
            record=self.record,
            number_errors={n: "105" for n in self.refused},
        )
        self.csv = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers])
        self.journals = tmp_path / "journals"
        self.db_url = db_url
        creds = self.sim.credentials
        self.env = {
            **os.environ,
            "BATCH_SENDER_DB": db_url,
            "BATCH_SENDER_GATEWAY_URL": self.sim.url,
            "BATCH_SENDER_JOURNAL_DIR": str(self.journals),
            "BATCH_SENDER_SEND_PROCESS": "never",
            "BATCH_SENDER_BACKOFF_SCALE": "0.01",
            "CLICKATELL_API_ID": str(creds.api_id),
            "CLICKATELL_USER": creds.user,
            "CLICKATELL_PASSWORD": creds.password,
        }

    def start(self, *extra: str, db_retry: float | None = None) -> subprocess.Popen[str]:
        """Start a run; ``db_retry`` goes in its environment variable (so that the same test
        runs unchanged on a version without --db-retry)."""
        env = dict(self.env)
        if db_retry is not None:
            env["BATCH_SENDER_DB_RETRY"] = str(db_retry)
        args = [_exe(), "run", str(self.csv), "--text", "Hello", "--name", "c"]
        args += ["--chunk-size", CHUNK, "--concurrency", "4", "--max-processing", "1"]
        args += ["--read-timeout", "5", *extra]
        return subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *extra: str, timeout: float = 120) -> tuple[int, str]:
        proc = self.start(*extra)
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err

    def rows(self) -> list[dict[str, Any]]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM results"))]
        finally:
            engine.dispose()

    def sent_so_far(self) -> int:
        """Rows recorded `sent`, read on a connection of its own (0 while nothing is there)."""
        try:
            return sum(r["status"] == "sent" for r in self.rows())
        except Exception:  # not staged yet, or the database is down right now
            return 0

    def wait_for_sent(self, proc: subprocess.Popen[str], at_least: int = 200) -> None:
        deadline = time.monotonic() + 60
        while self.sent_so_far() < at_least:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run sent nothing in 60 s"
            time.sleep(0.05)

    def journal_files(self) -> list[Path]:
        return sorted(self.journals.rglob("*.jsonl")) if self.journals.exists() else []

    def check(self) -> dict[str, int]:
        """Both ledgers agree, every row final; the figures."""
        rows = self.rows()
        accepted = [json.loads(x) for x in self.record.read_text().splitlines() if x.strip()]
        times = Counter(a["to"] for a in accepted)
        assert max(times.values()) == 1, "a number was accepted twice"
        status = {r["msisdn"]: r["status"] for r in rows}
        assert len(status) == ROWS
        assert {status[n] for n in self.refused} == {"failed"}, "a refused number is not failed"
        sent = {n for n, s in status.items() if s == "sent"}
        assert sent == set(times), (
            f"accepted not sent: {sorted(set(times) - sent)[:5]}, "
            f"sent never accepted: {sorted(sent - set(times))[:5]}"
        )
        ids = {r["msisdn"]: r["api_message_id"] for r in rows}
        assert all(ids[a["to"]] == a["api_message_id"] for a in accepted)
        return dict(Counter(status.values()))


def _resume_applies_the_journal_once(run: Run, journal: Path) -> None:
    """The next run applies the journal first and removes it; the same journal applied again
    (a copy put back) changes nothing; a run after that has nothing to apply or send."""
    copy = journal.read_bytes()
    code, err = run.run()
    assert code == 1, err
    assert f"applied journal {journal}" in err, err
    assert run.journal_files() == []
    assert run.check() == {"sent": ROWS - REFUSED, "failed": REFUSED}
    journal.write_bytes(copy)  # as if the removal had been lost
    code, err = run.run()
    assert code == 1, err
    assert f"applied journal {journal}: 0 outcomes recorded, 0 rows back" in err, err
    assert run.check() == {"sent": ROWS - REFUSED, "failed": REFUSED}
    code, err = run.run()
    assert code == 1 and "applied journal" not in err, err
    assert run.check() == {"sent": ROWS - REFUSED, "failed": REFUSED}


# --- SQLite on a tmpfs that fills up -----------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs of this test's own."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (run the suite as root to test a full disk)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path, db: Path) -> Path:
    """Leave no free byte on ``directory``'s filesystem, after emptying ``db``'s WAL (so that
    the run's next write needs new space)."""
    for _ in range(50):
        con = sqlite3.connect(db, timeout=30)
        try:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            con.close()
        if not busy:
            break
        time.sleep(0.02)
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):  # then the last pages, then the last bytes
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return ballast


def _sqlite(tmpfs: Path) -> tuple[Path, str]:
    db = tmpfs / "results.db"
    return db, f"sqlite:///{db}"


def test_sqlite_disk_full_then_freed_within_db_retry(tmpfs, tmp_path, make_simulator):
    """The disk fills mid-run and is freed 3 s later: the run waits, records everything it held
    and finishes the campaign itself (before: exit 2, 'database or disk is full', outcomes
    lost)."""
    db, url = _sqlite(tmpfs)
    run = Run(tmp_path, make_simulator, url)
    proc = run.start(db_retry=60)
    run.wait_for_sent(proc)
    ballast = _fill(tmpfs, db)
    time.sleep(3)
    ballast.unlink()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # finished; the refused numbers failed
    assert "database or disk is full" in err and "retrying for up to 60s" in err, err
    assert "Traceback" not in err
    figures = run.check()
    assert figures == {"sent": ROWS - REFUSED, "failed": REFUSED}
    assert run.journal_files() == []  # recorded in the end: nothing left to apply


def test_sqlite_disk_full_for_good_journal_applied_once(tmpfs, tmp_path, make_simulator):
    """The disk stays full past --db-retry: exit 3 naming the journal; once freed, the next run
    applies it first, exactly once: nothing resent, no refused number recorded sent."""
    db, url = _sqlite(tmpfs)
    run = Run(tmp_path, make_simulator, url)
    proc = run.start(db_retry=2)
    run.wait_for_sent(proc)
    ballast = _fill(tmpfs, db)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    journals = run.journal_files()
    assert len(journals) == 1 and str(journals[0]) in err, err
    assert "Traceback" not in err
    held = len(journals[0].read_text().splitlines()) - 1
    assert held > 0  # requests whose outcomes only the journal knows
    ballast.unlink()
    _resume_applies_the_journal_once(run, journals[0])


def test_sqlite_write_lock_held_by_another_writer_is_waited_out(tmp_path, make_simulator):
    """Another process holds SQLite's write lock for 20 s mid-run: the run waits it out (busy
    timeout) and finishes, every number once."""
    db = tmp_path / "results.db"
    run = Run(tmp_path, make_simulator, f"sqlite:///{db}")
    proc = run.start()
    run.wait_for_sent(proc)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    time.sleep(20)
    con.execute("ROLLBACK")
    con.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert run.check() == {"sent": ROWS - REFUSED, "failed": REFUSED}


# --- a private PostgreSQL cluster --------------------------------------------------------------


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A PostgreSQL cluster in a temporary directory, run as ``postgres`` when we are root."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="bs-pg-"))  # not under pytest's 0700 tmp
        self.data = self.dir / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("root, and no runuser to run PostgreSQL as an unprivileged user")
            shutil.chown(self.dir, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        done = self._do("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        if done.returncode != 0:
            pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
        self.start()

    def _do(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def pg_ctl(self, *args: str) -> None:
        done = self._do("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args)
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", options, "-l", str(self.dir / "log"), "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        # -l again: without it the restarted server writes to pg_ctl's (our captured) output
        self.pg_ctl("-m", "fast", "-l", str(self.dir / "log"), "restart")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        name = f"t{os.urandom(4).hex()}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        self._do("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


def test_postgres_restart_mid_run(cluster, tmp_path, make_simulator):
    """The database restarts mid-run (about a second away): the run holds on, records what it
    held, and finishes (before: exit 2, 'terminating connection', outcomes lost)."""
    run = Run(tmp_path, make_simulator, cluster.new_database())
    proc = run.start(db_retry=60)
    run.wait_for_sent(proc)
    cluster.restart()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "retrying for up to 60s" in err, err
    assert "Traceback" not in err
    assert run.check() == {"sent": ROWS - REFUSED, "failed": REFUSED}
    assert run.journal_files() == []


def test_postgres_down_for_good_journal_applied_once(cluster, tmp_path, make_simulator):
    """The database stops for good mid-run: exit 3 naming the journal; once it is back, the
    next run applies the journal first, exactly once; nothing resent, no refused one sent."""
    run = Run(tmp_path, make_simulator, cluster.new_database())
    proc = run.start(db_retry=2)
    run.wait_for_sent(proc)
    cluster.stop()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        cluster.start()
    assert proc.returncode == 3, err
    journals = run.journal_files()
    assert len(journals) == 1 and str(journals[0]) in err, err
    assert "Traceback" not in err
    _resume_applies_the_journal_once(run, journals[0])


def test_postgres_restart_during_staging_copy(cluster, tmp_path, make_simulator):
    """A restart while the campaign is being staged (COPY): a clean error, nothing sent, and a
    re-run stages every row once."""
    url = cluster.new_database()
    run = Run(tmp_path, make_simulator, url)
    big = _numbers(300_000)
    run.csv = write_csv(tmp_path / "big.csv", [(n, "x") for n in big])
    proc = run.start()
    engine = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no COPY seen in 60 s"
            with contextlib.suppress(Exception), engine.connect() as conn:
                copying = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY%'")
                ).scalar()
                if copying:
                    break
            time.sleep(0.01)
    finally:
        engine.dispose()
    cluster.restart()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "batch-sender: error:" in err, err
    assert not run.record.exists() or not run.record.read_text().strip()
    # a send window twelve hours away: this run stages, and sends nothing
    later = time.gmtime(time.time() + 12 * 3600)
    window = f"{later.tm_hour:02d}:00-{later.tm_hour:02d}:30"
    proc = run.start("--tz", "UTC", "--window", window)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = run.rows()
    assert len(rows) == len(big) and len({r["msisdn"] for r in rows}) == len(big)
    assert {r["status"] for r in rows} == {"pending"}


def test_journal_line_cut_short_is_left_out(tmp_path, monkeypatch):
    """A journal whose last line a crash cut short still applies the lines before it."""
    from batch_sender.store import journal

    monkeypatch.setenv("BATCH_SENDER_JOURNAL_DIR", str(tmp_path / "j"))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    j = journal.Journal(url, 1, "w")
    j.write([("abc", [], [1])])
    assert j.path is not None
    with j.path.open("a") as f:
        f.write('{"c":"abd","o":[[2,"se')
    entries = list(journal._read(j.path))
    assert entries == [{"c": "abc", "o": [], "r": [1]}]
    j.close()
