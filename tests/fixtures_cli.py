"""Running batch-sender as a user does: in-process (click's runner) or as the console script."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batch_sender.cli import cli

__all__ = ["CliResult", "bs", "bs_script", "each_send_process", "write_csv"]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def write_csv(
    path: Path, rows: Iterable[Sequence[Any]], header: Sequence[str] = ("to", "name")
) -> Path:
    """Write a small campaign file."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _gateway_env(sim: Any) -> dict[str, str]:
    creds = sim.credentials
    return {
        "BATCH_SENDER_GATEWAY_URL": sim.url,
        "CLICKATELL_API_ID": str(creds.api_id),
        "CLICKATELL_USER": creds.user,
        "CLICKATELL_PASSWORD": creds.password,
    }


@pytest.fixture(params=["never", "always"])
def each_send_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test twice: sending from threads of the run's process, then from a process of its
    own (``--send-process``, through its environment variable, so subprocesses get it too)."""
    mode: str = request.param
    monkeypatch.setenv("BATCH_SENDER_SEND_PROCESS", mode)
    return mode


@pytest.fixture
def bs(tmp_path: Path) -> Callable[..., CliResult]:
    """Run ``batch-sender ARGS`` in-process; ``sim=`` points it at a simulator, ``db`` defaults to
    a SQLite file in tmp_path."""

    def invoke(*args: str, sim: Any = None, env: dict[str, str] | None = None) -> CliResult:
        full_env = {"BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'results.db'}"}
        if sim is not None:
            full_env.update(_gateway_env(sim))
        full_env.update(env or {})
        runner = CliRunner()
        result = runner.invoke(cli, list(args), env=full_env, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return invoke


@pytest.fixture
def bs_script(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``batch-sender`` console script in a subprocess (as cron would)."""
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")

    def run(
        *args: str, sim: Any = None, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env["BATCH_SENDER_DB"] = f"sqlite:///{tmp_path / 'results.db'}"
        if sim is not None:
            full_env.update(_gateway_env(sim))
        full_env.update(env or {})
        return subprocess.run(
            [exe, *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    return run
