"""--metrics-file (Prometheus text), --log-format json and --heartbeat-url, through the CLI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv
from prometheus_client.parser import text_string_to_metric_families


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics file, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_file_holds_counts_parts_requests_and_the_outcome(bs, simulator, tmp_path):
    numbers = [str(27821000000 + i) for i in range(30)]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in [*numbers, "bad"]])
    metrics = tmp_path / "textfile" / "batch_sender.prom"
    metrics.parent.mkdir()

    out = bs(
        "run",
        str(src),
        "--text",
        "Hi",
        "--name",
        "m",
        "--chunk-size",
        "10",
        "--metrics-file",
        str(metrics),
        sim=simulator,
    )

    assert out.exit_code == 1  # one rejected number
    got = samples(metrics)
    c = ("campaign", "m")
    assert got[("batch_sender_recipients", (c, ("status", "sent")))] == 30
    assert got[("batch_sender_recipients", (c, ("status", "rejected")))] == 1
    assert got[("batch_sender_recipients", (c, ("status", "pending")))] == 0
    assert got[("batch_sender_message_parts", (c,))] == 30
    assert got[("batch_sender_run_requests", (c,))] == 3
    assert got[("batch_sender_run_exit_code", (c,))] == 1
    assert got[("batch_sender_run_outcome", (c, ("outcome", "finished")))] == 1
    assert got[("batch_sender_run_outcome", (c, ("outcome", "error")))] == 0
    assert got[("batch_sender_run_last_timestamp_seconds", (c,))] > 1.7e9
    assert list(metrics.parent.iterdir()) == [metrics]  # no temp file left behind


def test_a_run_stopped_by_the_gateway_reports_exit_3(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    metrics = tmp_path / "m.prom"
    out = bs(
        "run",
        str(src),
        "--text",
        "Hi",
        "--name",
        "s",
        "--metrics-file",
        str(metrics),
        sim=simulator,
        env={"CLICKATELL_PASSWORD": "wrong"},
    )
    assert out.exit_code == 3
    got = samples(metrics)
    assert got[("batch_sender_run_exit_code", (("campaign", "s"),))] == 3
    assert got[("batch_sender_run_outcome", (("campaign", "s"), ("outcome", "stopped")))] == 1


def test_a_usage_error_still_writes_the_metrics_file(bs, tmp_path):
    metrics = tmp_path / "m.prom"
    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    out = bs(
        "run", str(src), "--text", "Hi {missing}", "--name", "u", "--metrics-file", str(metrics)
    )
    assert out.exit_code == 2
    got = samples(metrics)
    assert got[("batch_sender_run_exit_code", (("campaign", "u"),))] == 2
    assert got[("batch_sender_run_outcome", (("campaign", "u"), ("outcome", "error")))] == 1


def test_log_format_json_writes_one_object_per_line(bs_script, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    run = bs_script("--log-format", "json", "run", str(src), "--text", "Hi", sim=simulator)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line parses
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any("campaign" in r["message"] for r in records)


class _Pings(BaseHTTPRequestHandler):
    paths: list[str]

    def do_GET(self) -> None:  # noqa: N802
        type(self).paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def healthchecks() -> Iterator[tuple[str, list[str]]]:
    """A tiny healthchecks-style server: the base URL and the paths it was pinged on."""
    handler = type("Pings", (_Pings,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping/abc", handler.paths
    server.shutdown()
    server.server_close()


def test_heartbeat_pings_start_and_the_exit_code(bs, simulator, tmp_path, healthchecks):
    url, paths = healthchecks
    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    out = bs("run", str(src), "--text", "Hi", "--heartbeat-url", url, sim=simulator)
    assert out.exit_code == 0, out.stderr
    assert paths == ["/ping/abc/start", "/ping/abc/0"]


def test_an_unreachable_heartbeat_never_fails_the_run(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000000", "x")])
    out = bs(
        "run", str(src), "--text", "Hi", "--heartbeat-url", "http://127.0.0.1:9/hc", sim=simulator
    )
    assert out.exit_code == 0, out.stderr
    assert "heartbeat" in out.stderr
    assert simulator.accepted_count == 1
