"""Figures for docs/RELIABILITY.md: how many rows lost answers leave unknown, and what it costs.

A many-number request whose answer is lost after the gateway took it stays ``unknown`` for good
(``querymsg`` by its client message ID learns about one message only); a one-number request
settles exactly. This runs the console script against the simulator (``--send-process never``
unless told, then ``reconcile``) and prints one JSON object per scenario: requests, wall
seconds, rows unknown after the run and after reconcile, rows sent, numbers accepted twice.

- ``clean``: no fault (what the size controller costs when nothing goes wrong);
- ``burst``: 25 answers in a row lost, starting once a fifth of the requests have arrived;
- ``scattered``: each answer lost with probability 3% (``--seed``).

Run it for the code of a checkout by its own interpreter::

    .venv/bin/python benchmarks/ambiguity.py --rows 5000 --chunk-size 50
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from batch_sender.simulator import Simulator, SimulatorConfig

BURST = 25  # answers lost in a row in the burst scenario
SCATTERED_RATE = 0.03


def _exe() -> str:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        raise SystemExit("the batch-sender console script is not installed (pip install -e .)")
    return exe


def _write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["to", "name"])
        writer.writerows((str(27821000000 + i), f"N{i}") for i in range(rows))


def _inject_burst(sim: Simulator, after: int, stop: threading.Event) -> None:
    while not stop.is_set():
        if sim.requests >= after:
            sim.inject("drop_after", times=BURST)
            return
        time.sleep(0.002)


def scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "c.csv"
        _write_csv(src, args.rows)
        record = work / "accepted.jsonl"
        rates = {"drop_after": SCATTERED_RATE} if name == "scattered" else {}
        config = SimulatorConfig(
            latency_ms=args.latency_ms, record=record, fault_rates=rates, seed=args.seed
        )
        with Simulator(config) as sim:
            env = dict(os.environ)
            env.update(
                BATCH_SENDER_DB=f"sqlite:///{work / 'results.db'}",
                BATCH_SENDER_GATEWAY_URL=sim.url,
                CLICKATELL_API_ID=str(sim.credentials.api_id),
                CLICKATELL_USER=sim.credentials.user,
                CLICKATELL_PASSWORD=sim.credentials.password,
            )
            stop = threading.Event()
            if name == "burst":
                after = args.rows // args.chunk_size // 5
                threading.Thread(target=_inject_burst, args=(sim, after, stop), daemon=True).start()
            started = time.perf_counter()
            run = subprocess.run(
                [_exe(), "run", str(src), "--text", "Hello", "--name", "amb", "-q"]
                + ["--chunk-size", str(args.chunk_size), "--concurrency", str(args.concurrency)]
                + ["--send-process", args.send_process],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.perf_counter() - started
            stop.set()
            requests = sim.requests
            unknown_after_run = _count(work / "results.db", "unknown")
            subprocess.run(
                [_exe(), "reconcile", "amb", "--max-processing", "1", "-q"],
                env=env,
                capture_output=True,
                check=False,
            )
        accepted = Counter(
            json.loads(line)["to"] for line in record.read_text().splitlines() if line.strip()
        )
        return {
            "scenario": name,
            "rows": args.rows,
            "exit": run.returncode,
            "requests": requests,
            "wall_s": round(wall, 2),
            "unknown_after_run": unknown_after_run,
            "unknown_after_reconcile": _count(work / "results.db", "unknown"),
            "sent": _count(work / "results.db", "sent"),
            "duplicates": sum(n - 1 for n in accepted.values()),
        }


def _count(db: Path, status: str) -> int:
    con = sqlite3.connect(db)
    try:
        sql = "SELECT count(*) FROM results WHERE status = ?"
        return int(con.execute(sql, (status,)).fetchone()[0])
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--send-process", choices=("never", "always"), default="never")
    parser.add_argument(
        "--scenarios", default="clean,burst,scattered", help="comma-separated subset"
    )
    args = parser.parse_args()
    for name in args.scenarios.split(","):
        print(json.dumps(scenario(name, args)), flush=True)


if __name__ == "__main__":
    main()
