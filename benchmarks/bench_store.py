"""Benchmark the results store: staging rows/s and claim+record recipients/s on each database.

Usage: ``python benchmarks/bench_store.py [--rows 100000] [--chunk 100]
[--db sqlite,postgresql,mariadb] [--pg-insert-methods] [--sync-commit] [--send N]
[--workers 1,2,4]``. Each database gets a fresh, throw-away schema (PostgreSQL), database
(MariaDB) or file (SQLite). ``--pg-insert-methods`` also times the three PostgreSQL bulk-insert
paths (executemany, multi-row VALUES, COPY). ``--sync-commit`` times claim+record again with
every commit synchronous (what ``record()`` did before it turned ``synchronous_commit`` off on
PostgreSQL). ``--send N`` runs the whole send path, ``batch-sender run`` (console script) over N
recipients against the simulator (a subprocess, no latency), on each database; ``--workers``
runs that many processes at once on the PostgreSQL campaign.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from batch_sender.states import Status
from batch_sender.store import Outcome, StagedRow, Store
from batch_sender.store import outcomes as store_outcomes
from batch_sender.store.tables import recipients

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
PAYLOADS = 10  # distinct message texts in the benchmark campaign


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """The URL of an empty database of ``kind``, dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    name = f"bs_bench_{uuid.uuid4().hex[:10]}"
    admin_url = POSTGRES_URL if kind == "postgresql" else MARIADB_URL
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    create, drop = (
        (f"CREATE SCHEMA {name}", f"DROP SCHEMA {name} CASCADE")
        if kind == "postgresql"
        else (f"CREATE DATABASE {name} CHARACTER SET utf8mb4", f"DROP DATABASE {name}")
    )
    with admin.connect() as conn:
        conn.execute(text(create))
    url = make_url(admin_url)
    url = (
        url.update_query_dict({"options": f"-csearch_path={name}"})
        if kind == "postgresql"
        else url.set(database=name)
    )
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(drop))
        admin.dispose()


def rows(count: int) -> Iterator[StagedRow]:
    """``count`` accepted rows over PAYLOADS payloads, with a rejected row every 1000."""
    for n in range(1, count + 1):
        if n % 1000 == 0:
            yield StagedRow(
                n, f"bad{n}", Status.REJECTED, error_code="NUM", error_description="bad"
            )
        else:
            payload = f"Hello, your code is {n % PAYLOADS}"
            yield StagedRow(n, f"4479{n:08d}", Status.PENDING, 1, f"d{n % PAYLOADS}", payload)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def bench(kind: str, count: int, chunk_size: int, *, label: str = "") -> None:
    with fresh_database(kind) as url, Store.open(url) as store:
        staged: list[int] = []

        def stage() -> None:
            campaign, _ = store.stage_campaign(
                name="bench", source="bench", fingerprint="f", options={}, rows=rows(count)
            )
            staged.append(campaign.id)

        stage_s = timed(stage)
        campaign_id = staged[0]
        sent = 0

        def drain() -> None:
            nonlocal sent
            n = 0
            while chunk := store.claim_chunk(
                campaign_id, size=chunk_size, client_message_id=f"c{n}", worker="bench"
            ):
                store.record(
                    [
                        Outcome(r.id, Status.SENT, api_message_id=f"{r.id:032x}")
                        for r in chunk.recipients
                    ]
                )
                sent += len(chunk.recipients)
                n += 1

        drain_s = timed(drain)
        chunks = -(-sent // chunk_size)
        print(
            f"{kind + label:10} stage {count / stage_s:>10,.0f} rows/s"
            f" ({stage_s * 1e6 / count:5.1f} µs/row)"
            f" | claim+record {sent / drain_s:>9,.0f} recipients/s"
            f" ({drain_s * 1e3 / chunks:5.2f} ms per {chunk_size}-row chunk)"
        )


def bench_pg_insert_methods(count: int) -> None:
    """Time executemany, multi-row VALUES and COPY for the recipients table on PostgreSQL."""
    now = datetime.now(UTC).replace(tzinfo=None)
    params = [
        {
            "campaign_id": 1,
            "row_no": n,
            "msisdn": f"4479{n:08d}",
            "status": "pending",
            "message_id": None,
            "parts": 1,
            "attempts": 0,
            "error_code": None,
            "error_description": None,
            "updated_at": now,
        }
        for n in range(1, count + 1)
    ]
    columns = list(params[0])

    def run(method: Callable[..., None]) -> float:
        with fresh_database("postgresql") as url, Store.open(url) as store:
            with store.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO campaigns (id, name, source, fingerprint, options,"
                        " status, total, created_at) VALUES (1, 'b', 's', 'f', '{}',"
                        " 'ready', 0, now())"
                    )
                )
            with store.engine.begin() as conn:
                start = time.perf_counter()
                for i in range(0, count, 5000):
                    method(conn, params[i : i + 5000])
                return time.perf_counter() - start

    def executemany(conn, batch):  # type: ignore[no-untyped-def]
        conn.execute(insert(recipients), batch)

    def multi_values(conn, batch):  # type: ignore[no-untyped-def]
        conn.execute(insert(recipients).values(batch))

    def copy(conn, batch):  # type: ignore[no-untyped-def]
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor.copy(f"COPY recipients ({', '.join(columns)}) FROM STDIN") as out:
            for row in batch:
                out.write_row(tuple(row.values()))

    for name, method in (
        ("executemany", executemany),
        ("multi-row VALUES", multi_values),
        ("COPY", copy),
    ):
        seconds = run(method)
        print(f"postgresql insert via {name:17} {count / seconds:>10,.0f} rows/s")


def bench_synchronous_record(count: int, chunk_size: int) -> None:
    """claim+record on PostgreSQL with ``record()`` committing synchronously, for comparison."""
    asynchronous = store_outcomes._asynchronous_commit
    store_outcomes._asynchronous_commit = lambda conn: None  # every commit waits for its flush
    try:
        bench("postgresql", count, chunk_size, label=" sync")
    finally:
        store_outcomes._asynchronous_commit = asynchronous


CREDENTIALS = {"CLICKATELL_API_ID": "123456", "CLICKATELL_USER": "u", "CLICKATELL_PASSWORD": "p"}


@contextmanager
def simulator_process() -> Iterator[str]:
    """``python -m batch_sender.simulator`` on a free port; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "batch_sender.simulator", "--port", str(port),
         "--no-keep-messages", "--api-id", "123456", "--user", "u", "--password", "p"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the simulator did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/soap/document_literal/webservice"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def bench_send(kind: str, count: int, workers: int) -> None:
    """``batch-sender run`` end to end (stage + send) on ``kind``, by ``workers`` processes."""
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent)) or "batch-sender"
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(kind) as url,
        simulator_process() as gateway,
    ):
        src = Path(tmp) / "send.csv"
        with src.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["to", "name"])
            out.writerows((f"4479{n:08d}", f"N{n}") for n in range(count))
        env = {**os.environ, **CREDENTIALS, "BATCH_SENDER_DB": url,
               "BATCH_SENDER_GATEWAY_URL": gateway}  # fmt: skip
        command = [exe, "run", str(src), "--text", "Hi", "--name", "send", "--json",
                   "--concurrency", "8"]  # fmt: skip
        start = time.perf_counter()
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        results = [json.loads(p.communicate()[0]) for p in procs]
        wall = time.perf_counter() - start
    sent = results[0]["counts"].get("sent", 0)
    print(
        f"{kind:10} send path, {workers} process{'es' if workers > 1 else ''}:"
        f" {sent:,} sent in {wall:5.1f} s = {sent / wall:>8,.0f} recipients/s (stage included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--db", default="sqlite,postgresql,mariadb")
    parser.add_argument("--pg-insert-methods", action="store_true")
    parser.add_argument("--sync-commit", action="store_true")
    parser.add_argument("--send", type=int, default=0, metavar="N")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--skip-store", action="store_true", help="only the --send runs")
    args = parser.parse_args()
    kinds = args.db.split(",")
    if not args.skip_store:
        for kind in kinds:
            bench(kind, args.rows, args.chunk)
    if args.sync_commit:
        bench_synchronous_record(args.rows, args.chunk)
    if args.pg_insert_methods:
        bench_pg_insert_methods(args.rows)
    if args.send:
        for kind in kinds:
            bench_send(kind, args.send, 1)
        for workers in (int(w) for w in args.workers.split(",")):
            if workers > 1:
                bench_send("postgresql", args.send, workers)


if __name__ == "__main__":
    main()
