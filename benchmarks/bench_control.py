"""How soon a `batch-sender pause` stops every worker: from the command's return to each
worker's "no more claims" line and to its exit, and how many messages went out meanwhile.

    python benchmarks/bench_control.py                       # SQLite, 2 workers
    python benchmarks/bench_control.py --db postgresql+psycopg://postgres@127.0.0.1/test

Two `batch-sender run` processes share one campaign (2,000 rows, chunks of 10, --rate 100)
against the simulator (20 ms per answer); the pause comes once both have claimed rows.
A PostgreSQL or MariaDB URL gets a fresh schema/database, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from batch_sender.simulator import Simulator, SimulatorConfig

ROWS = 2000
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4})")


def _fresh(url: str) -> tuple[str, object]:
    """A fresh database for ``url``'s engine, and how to drop it."""
    parsed = make_url(url)
    name = f"bs_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    if parsed.get_backend_name() == "postgresql":
        with admin.connect() as c:
            c.execute(text(f"CREATE SCHEMA {name}"))
        out = parsed.update_query_dict({"options": f"-csearch_path={name}"})
        drop = f"DROP SCHEMA {name} CASCADE"
    else:
        with admin.connect() as c:
            c.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        out = parsed.set(database=name)
        drop = f"DROP DATABASE {name}"

    def cleanup() -> None:
        with admin.connect() as c:
            c.execute(text(drop))
        admin.dispose()

    return out.render_as_string(hide_password=False), cleanup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="results database URL (default: a SQLite file)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent)) or "batch-sender"
    tmp = Path(tempfile.mkdtemp(prefix="bs-bench-control-"))
    cleanup = None
    db = f"sqlite:///{tmp / 'results.db'}"
    if args.db:
        db, cleanup = _fresh(args.db)
    src = tmp / "c.csv"
    src.write_text("to,name\n" + "".join(f"{27821000000 + i},x\n" for i in range(ROWS)))
    sim = Simulator(SimulatorConfig(latency_ms=20)).start()
    creds = sim.credentials
    env = {
        **os.environ,
        "BATCH_SENDER_DB": db,
        "BATCH_SENDER_GATEWAY_URL": sim.url,
        "CLICKATELL_API_ID": str(creds.api_id),
        "CLICKATELL_USER": creds.user,
        "CLICKATELL_PASSWORD": creds.password,
    }
    run = [exe, "run", str(src), "--text", "Hi", "--name", "bench", "--chunk-size", "10",
           "--rate", "100"]  # fmt: skip
    engine = create_engine(db)
    try:
        procs = [subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True)]
        while sim.accepted_count == 0:
            time.sleep(0.02)
        procs += [
            subprocess.Popen(run, env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(args.workers - 1)
        ]
        query = text("SELECT count(DISTINCT claimed_by) FROM recipients")
        while True:
            with engine.connect() as conn:
                if conn.execute(query).scalar_one() >= args.workers:
                    break
            time.sleep(0.05)
        subprocess.run([exe, "-q", "pause", "bench"], env=env, check=True)
        paused_at, sent_at_pause = time.time(), sim.accepted_count
        exits = []
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            exits.append((proc.returncode, time.time() - paused_at, err))
        print(f"database: {make_url(db).get_backend_name()}, workers: {args.workers}")
        print(f"sent when the pause returned: {sent_at_pause}; in the end: {sim.accepted_count}")
        for code, after, err in exits:
            seen = [ln for ln in err.splitlines() if "no more claims" in ln]
            stamp = _STAMP.match(seen[0]) if seen else None
            noticed = "-"
            if stamp:
                when = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S%z").timestamp()
                noticed = f"{when - paused_at:+.0f}s (1 s log resolution)"
            print(f"worker exit {code} after {after:.1f}s; noticed the pause at {noticed}")
    finally:
        engine.dispose()
        sim.stop()
        if cleanup is not None:
            cleanup()  # type: ignore[operator]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
