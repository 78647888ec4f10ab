"""Figures for docs/RELIABILITY.md: the results database failing mid-run (issue 16, items 1-2).

Runs the scenarios of tests/integration/test_db_failure.py (same campaign: 2,000 numbers, 25 of
them refused with ERR 105, chunks of 10, 4 connections, 40 ms gateway latency) and prints one
JSON object per scenario: exit codes, seconds the database was away, outcomes held and
journaled, what the next run applied, duplicates and losses. Needs root (tmpfs) and the
PostgreSQL server binaries (a private cluster; the shared server is never touched)::

    .venv/bin/python benchmarks/db_failure.py
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "integration")]

import test_db_failure as t  # noqa: E402

from batch_sender.simulator import Simulator, SimulatorConfig  # noqa: E402


def _simulator_factory(started: list[Simulator]) -> Any:
    def make(**overrides: Any) -> Simulator:
        values = {"api_id": "123456", "user": "MyUserName", "password": "MyPassword", **overrides}
        sim = Simulator(SimulatorConfig(**values)).start()
        started.append(sim)
        return sim

    return make


def _figures(err: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if m := re.search(r"back after ([\d.]+)s", err):
        out["database_away_s"] = float(m.group(1))
    if m := re.findall(r"recorded the (\d+) held outcomes", err):
        out["held_then_recorded"] = sum(map(int, m))
    if m := re.search(r"(\d+) outcomes are kept in the journal", err):
        out["journaled"] = int(m.group(1))
    if m := re.search(r"applied journal \S+: (\d+) outcomes recorded, (\d+) rows back", err):
        out["applied"], out["released_by_apply"] = int(m.group(1)), int(m.group(2))
    return out


def _scenario(name: str, tmp: Path, url: str, fault: Any, db_retry: float) -> dict[str, Any]:
    started: list[Simulator] = []
    try:
        run = t.Run(tmp, _simulator_factory(started), url)
        begun = time.monotonic()
        proc = run.start(db_retry=db_retry)
        run.wait_for_sent(proc)
        sent_at_fault = run.sent_so_far()
        after = fault()
        _, err = proc.communicate(timeout=300)
        result: dict[str, Any] = {
            "scenario": name,
            "exit": proc.returncode,
            "seconds": round(time.monotonic() - begun, 1),
            "sent_when_the_fault_began": sent_at_fault,
            **_figures(err),
        }
        if after is not None:
            after()
        if proc.returncode == 3:
            result["journal_lines"] = sum(
                len(p.read_text().splitlines()) - 1 for p in run.journal_files()
            )
            code, err2 = run.run()
            result["rerun_exit"] = code
            result.update({f"rerun_{k}": v for k, v in _figures(err2).items()})
        result["final"] = run.check()  # raises on a duplicate or a loss
        result["requests"] = sum(sim.requests for sim in started)
        result["duplicates"] = result["lost"] = 0
        return result
    finally:
        for sim in started:
            sim.stop()


def main() -> None:
    import subprocess

    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        for i, (name, retry, hold) in enumerate(
            [("sqlite tmpfs full for 3 s", 60, 3.0), ("sqlite tmpfs full for good", 2, None)]
        ):
            tmp = base / f"s{i}"
            mnt = tmp / "mnt"
            mnt.mkdir(parents=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True
            )
            try:
                db = mnt / "results.db"

                def fault(db: Path = db, mnt: Path = mnt, hold: float | None = hold) -> Any:
                    ballast = t._fill(mnt, db)
                    if hold is None:
                        return ballast.unlink
                    time.sleep(hold)
                    ballast.unlink()
                    return None

                print(json.dumps(_scenario(name, tmp, f"sqlite:///{db}", fault, retry)))
            finally:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
        cluster = t.Cluster()
        try:
            tmp = base / "p1"
            tmp.mkdir()
            print(
                json.dumps(
                    _scenario(
                        "postgresql restart (pg_ctl -m fast)",
                        tmp,
                        cluster.new_database(),
                        lambda: cluster.restart(),
                        60,
                    )
                )
            )
            tmp = base / "p2"
            tmp.mkdir()

            def stop() -> Any:
                cluster.stop()
                return cluster.start

            print(
                json.dumps(
                    _scenario("postgresql stopped for good", tmp, cluster.new_database(), stop, 2)
                )
            )
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
