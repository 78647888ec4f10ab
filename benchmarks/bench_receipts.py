"""Delivery-receipt ingest: receipts/s and answer times of the receiver, old and new, per database.

For each database (SQLite, PostgreSQL, MariaDB) and each receiver (``new``: this working tree;
``old``: the code of ``--old-ref``, exported with ``git archive`` to a temporary directory), it
starts ``python -m batch_sender.cli callbacks`` on a free port against a fresh database, stages
``--messages`` sent rows (each with its apiMsgId and cliMsgId), then lets ``--clients``
keep-alive connections POST two receipts per message (003, then 004: the callback form
Clickatell sends, every field) as fast as the receiver answers. It reports receipts/s over the
load's wall time, the answer time (p50/p99/max, measured by the client from the request's first
byte to the answer's last), the receiver's CPU seconds, and checks that nothing was lost: every
receipt answered 2xx is in ``delivery_events``.

Usage::

    python benchmarks/bench_receipts.py                      # 10,000 messages, 50 clients, all
    python benchmarks/bench_receipts.py --messages 2000 --databases sqlite --receivers new
    python benchmarks/bench_receipts.py --old-ref main --json benchmarks/out/receipts.json

The client is one asyncio process (uvloop) on the same machine: its CPU competes with the
receiver's (and the database's) for the two cores, as Clickatell's does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from batch_sender.store.tables import (  # noqa: E402
    campaigns,
    delivery_events,
    messages,
    recipients,
)

POSTGRES_URL = os.environ.get(
    "BATCH_SENDER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "BATCH_SENDER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHUNK = 100  # recipients per (simulated) request: one cliMsgId each
STARTUP_TIMEOUT = 30.0
TARGETS = {"postgresql": 5000.0, "sqlite": 3000.0}  # receipts/s, issue 16 item 5
P99_TARGET_MS = 50.0


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database of ``kind``: its URL; dropped afterwards (SQLite: a file)."""
    if kind == "sqlite":
        path = workdir / f"receipts-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    name = f"bs_bench_{uuid.uuid4().hex[:10]}"
    base = POSTGRES_URL if kind == "postgresql" else MARIADB_URL
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if kind == "postgresql":
            conn.execute(text(f"CREATE SCHEMA {name}"))
            url = make_url(base).update_query_dict({"options": f"-csearch_path={name}"})
        else:
            conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            url = make_url(base).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def export(ref: str, into: Path) -> Path:
    """The ``batch_sender`` package of git ``ref``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "batch_sender"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


@contextmanager
def receiver(code: Path, db_url: str, log: Path) -> Iterator[tuple[str, int, int]]:
    """``batch-sender callbacks`` from the package under ``code``: (host, port, pid)."""
    env = {**os.environ, "BATCH_SENDER_DB": db_url, "PYTHONPATH": str(code)}
    env = {k: v for k, v in env.items() if not k.startswith("BATCH_SENDER_CALLBACK")}
    err = log.open("a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "batch_sender.cli", "callbacks", "--port", "0"],
        cwd=code,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    found = None
    for line in proc.stderr:
        err.write(line)
        found = re.search(r"receiving delivery callbacks at http://([0-9.]+):([0-9]+)/", line)
        if found or time.monotonic() > deadline:
            break
    if not found:
        proc.kill()
        raise RuntimeError(f"the receiver under {code} did not start (see {log})")
    try:
        yield found[1], int(found[2]), proc.pid
    finally:
        proc.terminate()
        _, rest = proc.communicate(timeout=60)
        err.write(rest)
        err.close()


def stage(db_url: str, n: int) -> list[tuple[str, str, str]]:
    """``n`` sent rows in a new campaign: (apiMsgId, cliMsgId, number) of each."""
    engine = create_engine(db_url)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(f"{i:032x}", f"bench-{i // CHUNK}", str(27820000000 + i)) for i in range(1, n + 1)]
    with engine.begin() as conn:
        cid = conn.execute(
            insert(campaigns).values(
                name="receipts",
                source="bench",
                fingerprint="f",
                options="{}",
                status="finished",
                total=n,
                created_at=now,
            )
        ).inserted_primary_key[0]
        mid = conn.execute(
            insert(messages).values(
                campaign_id=cid, digest="d", wire_text="Hi", unicode=False, parts=1
            )
        ).inserted_primary_key[0]
        for start in range(0, n, 5000):
            conn.execute(
                insert(recipients),
                [
                    {
                        "campaign_id": cid,
                        "row_no": start + j + 1,
                        "msisdn": to,
                        "status": "sent",
                        "message_id": mid,
                        "parts": 1,
                        "attempts": 1,
                        "client_message_id": cli,
                        "api_message_id": api,
                        "updated_at": now,
                    }
                    for j, (api, cli, to) in enumerate(rows[start : start + 5000])
                ],
            )
    engine.dispose()
    return rows


def recorded_events(db_url: str) -> int:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(delivery_events)).scalar_one())
    engine.dispose()
    return count


def requests_for(rows: list[tuple[str, str, str]]) -> list[bytes]:
    """Two POSTs per message, every 003 before its 004 (in two passes)."""
    out = []
    stamp = str(int(time.time()))
    for status in ("003", "004"):
        for api, cli, to in rows:
            body = urlencode(
                {
                    "api_id": "123456",
                    "apiMsgId": api,
                    "cliMsgId": cli,
                    "to": to,
                    "timestamp": stamp,
                    "from": "27820000000",
                    "status": status,
                    "charge": "0.8",
                }
            ).encode()
            out.append(
                b"POST /clickatell/status HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
    return out


async def load(host: str, port: int, requests: list[bytes], clients: int) -> dict[str, Any]:
    """Send every request over ``clients`` keep-alive connections; answer times and statuses."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures = 0
    position = 0

    async def client() -> None:
        nonlocal position, failures
        reader = writer = None
        while position < len(requests):
            request = requests[position]
            position += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                latencies.append(time.perf_counter() - started)
                code = int(head[9:12])
                statuses[code] = statuses.get(code, 0) + 1
                if b"onnection: close" in head:
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                failures += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    return {
        "wall_s": round(wall, 3),
        "receipts_s": round(ok / wall, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "answered_2xx": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connection_failures": failures,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def measure(code: Path, kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with database(kind, workdir) as db_url:
        with receiver(code, db_url, workdir / "receipts.log") as (host, port, pid):
            rows = stage(db_url, args.messages)
            requests = requests_for(rows)
            before = cpu_seconds(pid)
            mine = time.process_time()
            result = _run_load(host, port, requests, args.clients)
            result["receiver_cpu_s"] = round(cpu_seconds(pid) - before, 2)
            result["client_cpu_s"] = round(time.process_time() - mine, 2)
        stored = recorded_events(db_url)
    per_receipt = result["receiver_cpu_s"] * 1000 / len(requests)
    result["receiver_cpu_ms_per_receipt"] = round(per_receipt, 3)
    result["load_1min"] = round(os.getloadavg()[0], 1)
    result["receipts"] = len(requests)
    result["stored"] = stored
    result["lost"] = result["answered_2xx"] - stored  # answered 2xx, yet not in the database
    return result


def _run_load(host: str, port: int, requests: list[bytes], clients: int) -> dict[str, Any]:
    try:
        import uvloop

        return uvloop.run(load(host, port, requests, clients))
    except ImportError:
        return asyncio.run(load(host, port, requests, clients))


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| database | receiver | receipts/s | p50 ms | p99 ms | max ms | 2xx | lost | "
        "receiver CPU s | receiver CPU ms/receipt | client CPU s | load | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        target = TARGETS.get(r["database"])
        verdict = "-"
        if target is not None and r["receiver"] == "new":
            good = (
                r["receipts_s"] >= target
                and r["p99_ms"] < P99_TARGET_MS
                and r["lost"] == 0
                and r["answered_2xx"] == r["receipts"]
            )
            verdict = f"{'PASS' if good else 'MISS'} (>= {target:,.0f}/s, p99 < 50 ms)"
        lines.append(
            f"| {r['database']} | {r['receiver']} | {r['receipts_s']:,.0f} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} | {r['answered_2xx']:,}/{r['receipts']:,} | "
            f"{r['lost']} | {r['receiver_cpu_s']} | {r['receiver_cpu_ms_per_receipt']} | "
            f"{r['client_cpu_s']} | {r['load_1min']} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="messages (2 receipts each)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent connections")
    parser.add_argument("--databases", default="sqlite,postgresql,mariadb", help="comma-separated")
    parser.add_argument("--receivers", default="old,new", help="old, new or both")
    parser.add_argument("--old-ref", default="main", help="git ref of the old receiver")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-receipts-") as tmp:
        workdir = Path(tmp)
        codes = {"new": REPO}
        if "old" in args.receivers.split(","):
            old = workdir / "old"
            old.mkdir()
            codes["old"] = export(args.old_ref, old)
        for kind in args.databases.split(","):
            for name in args.receivers.split(","):
                figures = measure(codes[name], kind, args, workdir)
                figures.update(database=kind, receiver=name)
                results.append(figures)
                print(
                    f"{kind:10} {name:3} {figures['receipts_s']:8,.0f}/s "
                    f"p99 {figures['p99_ms']:7.1f} ms lost {figures['lost']} "
                    f"cpu {figures['receiver_cpu_ms_per_receipt']:.3f} ms/receipt "
                    f"2xx {figures['answered_2xx']}/{figures['receipts']}",
                    file=sys.stderr,
                    flush=True,
                )
    print(table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
