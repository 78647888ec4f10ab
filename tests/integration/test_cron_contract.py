"""The 2 a.m. contract: exits and output that a cron job (and a person reading its mail) can trust.

Through the installed console script, as cron runs it, against the simulator over HTTP:

- rejected, duplicate and suppressed rows are reported, not failures: exit 0 when every sendable
  recipient was accepted; exit 1 only when the gateway refused some;
- ``--max-rejected PERCENT`` refuses the wrong file (exit 2, nothing staged or sent);
- a re-run of a finished campaign exits 0 with one line, without asking the gateway;
- an unreachable gateway at start is retried, then exit 3 (resumable), not exit 2;
- ``-q`` prints nothing on success, wherever it is written; warnings still reach stderr;
- the README's crontab line, run as written, is silent and pings the heartbeat with ``/0``;
- on a terminal, log lines print above the progress bar, never into it (a real pty).
"""

from __future__ import annotations

import http.server
import os
import pty
import re
import select
import shlex
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fixtures_cli import write_csv

from batch_sender.simulator import Simulator, SimulatorConfig

FAST = {"BATCH_SENDER_BACKOFF_SCALE": "0.01"}
README = Path(__file__).resolve().parents[2] / "README.md"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (DEBUG|INFO|WARNING|ERROR) ")


def numbers(n: int, start: int = 27821000000) -> list[str]:
    return [str(start + i) for i in range(n)]


def statuses(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT status, count(*) FROM results GROUP BY status").fetchall())
    finally:
        con.close()


def campaign_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        return (
            con.execute("SELECT count(*) FROM campaigns").fetchone()[0]
            if "campaigns" in tables
            else 0
        )
    finally:
        con.close()


def mixed_file(path: Path) -> Path:
    """Ten sendable numbers, one repeated, two unusable, one on the suppression list."""
    good = numbers(10)
    rows = [(n, "x") for n in good] + [(good[0], "again"), ("not a number", "x"), ("12", "x")]
    rows.append(("27829999999", "opted out"))
    return write_csv(path, rows)


# --- exits --------------------------------------------------------------------------------


def test_rejected_duplicate_and_suppressed_rows_are_reported_and_exit_0(
    bs_script, simulator, tmp_path
):
    assert bs_script("suppress", "add", "27829999999").returncode == 0
    src = mixed_file(tmp_path / "c.csv")
    out = bs_script("run", str(src), "--text", "Hi", "--name", "m", sim=simulator)
    assert out.returncode == 0, out.stderr
    assert statuses(tmp_path / "results.db") == {
        "sent": 10,
        "duplicate": 1,
        "rejected": 2,
        "suppressed": 1,
    }
    assert "rejected" in out.stdout  # reported, in the summary


def test_numbers_the_gateway_refuses_exit_1_with_a_warning_even_with_q(
    bs_script, make_simulator, tmp_path
):
    sim = make_simulator(number_errors={"27821000003": "121"})
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(5)])
    out = bs_script("-q", "run", str(src), "--text", "Hi", "--name", "r", sim=sim)
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 1 and "the gateway refused 1 recipients" in warnings[0]
    assert "batch-sender report r" in warnings[0]


def test_a_rerun_of_a_finished_campaign_exits_0_with_one_line_without_the_gateway(
    bs_script, simulator, tmp_path
):
    src = mixed_file(tmp_path / "c.csv")
    first = bs_script("run", str(src), "--text", "Hi", "--name", "done", sim=simulator)
    assert first.returncode == 0, first.stderr
    asked = simulator.requests

    # the next cron tick: the gateway is down, and nobody needs to know
    again = bs_script(
        "run", str(src), "--text", "Hi", "--name", "done", sim=simulator,
        env={"BATCH_SENDER_GATEWAY_URL": closed_port_url()},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert again.stdout.splitlines() == [
        "campaign done has nothing left to send (11 sent, 2 rejected, 1 duplicate): nothing sent"
    ]
    quiet = bs_script("run", str(src), "--text", "Hi", "--name", "done", "-q", sim=simulator)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert simulator.requests == asked


def test_max_rejected_refuses_the_wrong_file_before_anything_is_staged_or_sent(
    bs, simulator, tmp_path, db_url
):
    env = {"BATCH_SENDER_DB": db_url}
    rows = [(n, "x") for n in numbers(7)] + [("not a number", "x")] * 3  # 30% unusable
    src = write_csv(tmp_path / "wrong.csv", rows)

    dry = bs("run", str(src), "--text", "Hi", "--dry-run", "--max-rejected", "20", env=env)
    assert dry.exit_code == 2
    assert "rejected: 3" in dry.stdout
    refused = bs("run", str(src), "--text", "Hi", "--name", "w", "--max-rejected", "20",
                 sim=simulator, env=env)  # fmt: skip
    assert refused.exit_code == 2, refused.stderr
    error = refused.stderr.strip().splitlines()[-1]
    assert error == (
        "batch-sender: error: 3 of 10 rows (30.0%) are unusable, more than --max-rejected 20%: "
        "nothing sent (is it the right file?)"
    )
    assert "Traceback" not in refused.stderr
    assert simulator.accepted_count == 0
    assert "w" not in bs("campaigns", "--json", env=env).stdout  # nothing staged
    ok = bs("run", str(src), "--text", "Hi", "--name", "w", "--max-rejected", "30",
            sim=simulator, env=env)  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    assert simulator.accepted_count == 7


def test_max_rejected_also_guards_a_campaign_staged_without_it(bs, simulator, tmp_path):
    rows = [(n, "x") for n in numbers(2)] + [("not a number", "x")] * 2
    src = write_csv(tmp_path / "c.csv", rows)
    # staged by a run that was stopped before sending (no credit), then resumed with the limit
    simulator.gateway.set_credits(0)
    assert bs("run", str(src), "--text", "Hi", "--name", "s", sim=simulator).exit_code == 3
    out = bs("run", str(src), "--text", "Hi", "--name", "s", "--max-rejected", "10", sim=simulator)
    assert out.exit_code == 2
    assert "2 of 4 rows (50.0%) are unusable" in out.stderr
    assert simulator.accepted_count == 0


# --- the gateway unreachable at start -----------------------------------------------------


def closed_port_url(port: int | None = None) -> str:
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/soap/document_literal/webservice"


def test_an_unreachable_gateway_at_start_is_retried_then_exit_3_and_nothing_is_staged(
    bs_script, simulator, tmp_path
):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(3)])
    url = closed_port_url()
    out = bs_script(
        "run", str(src), "--text", "Hi", "--name", "u", "--max-attempts", "4", sim=simulator,
        env={**FAST, "BATCH_SENDER_GATEWAY_URL": url},
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    assert out.stderr.count("not reached; trying again") == 3  # attempts 2, 3 and 4
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"batch-sender: error: cannot reach the gateway at {url} after 4")
    assert "run again later" in last and "Traceback" not in out.stderr
    assert campaign_count(tmp_path / "results.db") == 0
    # the network is back: the next tick sends
    again = bs_script("run", str(src), "--text", "Hi", "--name", "u", sim=simulator)
    assert again.returncode == 0, again.stderr
    assert simulator.accepted_count == 3


def test_a_gateway_that_comes_back_during_the_first_retries_is_used(tmp_path):
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(3)])
    env = {
        **os.environ,
        "BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'results.db'}",
        "BATCH_SENDER_GATEWAY_URL": closed_port_url(port),
        "CLICKATELL_API_ID": "123456",
        "CLICKATELL_USER": "MyUserName",
        "CLICKATELL_PASSWORD": "MyPassword",
    }
    proc = subprocess.Popen(
        [exe, "run", str(src), "--text", "Hi", "--name", "b"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the run retries with the usual backoff (1 s and more next)
        seen.append(line)
        if "not reached; trying again (attempt 2 of" in line:
            break
    sim = Simulator(SimulatorConfig(port=port)).start()  # the network is back
    try:
        rest = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, "".join(seen) + rest
        assert sim.accepted_count == 3
    finally:
        sim.stop()


# --- quiet --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_q_prints_nothing_on_success_before_or_after_the_subcommand(
    bs_script, simulator, tmp_path, where
):
    src = mixed_file(tmp_path / "c.csv")
    args = ["run", str(src), "--text", "Hi", "--name", "q"]
    args = ["-q", *args] if where == "before" else [*args, "-q"]
    out = bs_script(*args, sim=simulator)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert simulator.accepted_count == 11


def test_v_works_after_the_subcommand_and_v_with_q_is_a_usage_error(bs_script, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(2)])
    loud = bs_script("run", str(src), "--text", "Hi", "--name", "v", "-v", sim=simulator)
    assert loud.returncode == 0 and " DEBUG " in loud.stderr
    both = bs_script("-q", "run", str(src), "--text", "Hi", "-v", "-q", sim=simulator)
    assert both.returncode == 2
    assert "-v/--verbose and -q/--quiet do not go together" in both.stderr


def test_q_still_says_why_a_run_stopped(bs_script, make_simulator, tmp_path):
    sim = make_simulator()
    sim.gateway.set_credits(0)
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(2)])
    out = bs_script("-q", "run", str(src), "--text", "Hi", "--name", "c", sim=sim)
    assert out.returncode == 3
    assert out.stdout == ""
    assert "stopped:" in out.stderr


# --- the README's crontab, as written ----------------------------------------------------


class Pings(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        Pings.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def heartbeat() -> Iterator[str]:
    Pings.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/ping/abc"
    server.shutdown()
    server.server_close()


def window_around_now(zone: str) -> str:
    """A --window open from two hours before to two hours after now in ``zone`` (the numbers'
    own time): "00:00-23:59" shut for the last minute of the recipients' day, and a run made
    then (21:59 UTC for ZA numbers) sent nothing."""
    now = datetime.now(ZoneInfo(zone))
    return f"{now - timedelta(hours=2):%H:%M}-{now + timedelta(hours=2):%H:%M}"


def readme_cron_run_line() -> list[str]:
    """The arguments of the README crontab's sending line (after ``flock … batch-sender``)."""
    text = README.read_text(encoding="utf-8")
    block = text.split("```crontab", 1)[1].split("```", 1)[0]
    line = next(ln for ln in block.splitlines() if " run daily.csv " in ln)
    command = line.split("batch-sender.lock ", 1)[1]
    assert ">" not in command, "the sending line must not redirect: cron mails what it prints"
    words = shlex.split(command)
    assert words[0] == "batch-sender"
    return words[1:]


def test_the_readme_crontab_line_is_silent_on_a_good_day_and_pings_0(
    bs_script, simulator, tmp_path, heartbeat
):
    words = readme_cron_run_line()
    assert "-q" in words
    # 2% of a day's file unusable, as in real exports
    rows = [(n, "Ann") for n in numbers(98)] + [("n/a", "Bo"), ("0", "Cy")]
    daily = write_csv(tmp_path / "daily.csv", rows)
    swap = {
        "daily.csv": str(daily),
        "/var/lib/node_exporter/textfile/batch_sender.prom": str(tmp_path / "m.prom"),
    }
    args = [swap.get(w, w) for w in words]
    args[args.index("--heartbeat-url") + 1] = heartbeat
    if "--window" in args:  # the test must not depend on the hour it runs at
        args[args.index("--window") + 1] = window_around_now("Africa/Johannesburg")
    out = bs_script(*args, sim=simulator)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), out.stderr
    assert Pings.seen == ["/ping/abc/start", "/ping/abc/0"]
    assert simulator.accepted_count == 98
    tick = bs_script(*args, sim=simulator)  # 15 minutes later: still silent, still green
    assert (tick.returncode, tick.stdout, tick.stderr) == (0, "", "")
    assert Pings.seen[-1] == "/ping/abc/0"


# --- the progress bar on a terminal -------------------------------------------------------


def screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: carriage returns, newlines, erase-to-end-of-line;
    other escape sequences are ignored."""
    lines = [""]
    col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\x1b":
            match = re.compile(r"\x1b\[[0-9;?]*([@-~])").match(raw, i)
            if match is None:
                i += 1
                continue
            if match.group(1) == "K":
                lines[-1] = lines[-1][:col]
            i = match.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("")
            col = 0
        else:
            line = lines[-1].ljust(col)
            lines[-1] = line[:col] + ch + line[col + 1 :]
            col += 1
        i += 1
    return lines


def run_on_a_terminal(
    args: list[str], env: dict[str, str], *, columns: int = 120, timeout: float = 60
) -> tuple[int, list[str]]:
    """Run the console script with its stderr on a pseudo-terminal; (exit code, the screen)."""
    import fcntl
    import termios

    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(
        [exe, *args],
        env={**os.environ, **env, "COLUMNS": str(columns)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    raw = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            raw += data
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=10)
    return code, screen(raw.decode("utf-8", "replace"))


def test_log_lines_print_above_the_progress_bar_on_a_terminal(make_simulator, tmp_path):
    sim = make_simulator(latency_ms=40)
    sim.inject("expire_sessions", times=1)  # a re-authentication: a log line mid-run
    src = write_csv(tmp_path / "c.csv", [(n, "x") for n in numbers(400)])
    creds = sim.credentials
    env = {
        "BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'results.db'}",
        "BATCH_SENDER_GATEWAY_URL": sim.url,
        "CLICKATELL_API_ID": str(creds.api_id),
        "CLICKATELL_USER": creds.user,
        "CLICKATELL_PASSWORD": creds.password,
    }
    args = ["run", str(src), "--text", "Hi", "--name", "t", "--chunk-size", "10",
            "--concurrency", "2"]  # fmt: skip
    code, shown = run_on_a_terminal(args, env)
    assert code == 0, "\n".join(shown)
    logged = [ln for ln in shown if LOG_LINE.search(ln)]
    assert len(logged) >= 4, "\n".join(shown)
    for line in logged:  # each log line whole, on a line of its own, from column 0
        assert LOG_LINE.match(line), f"garbled: {line!r}\n" + "\n".join(shown)
        assert "sending [" not in line
    bars = [ln for ln in shown if ln.startswith("sending [")]
    assert len(bars) == 1, "\n".join(shown)  # drawn in place: one bar, at its final state
    assert "100%" in bars[0] and "400/400" in bars[0]
    during = shown.index(bars[0])
    above = shown[:during]  # what was logged while the bar ran went above it
    assert sum("authenticated" in ln for ln in above) == 2  # at start, and again mid-run
    assert any("estimated cost" in ln for ln in above)
    assert any("sent 400 recipients" in ln for ln in shown[during + 1 :])
