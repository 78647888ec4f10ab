"""Bad input, clear errors, nothing lost: every mistake is exit 2 with one line, never a traceback.

Malformed files, bad options, a gateway that is not there or not SOAP, a database that cannot be
written: each is refused through the CLI before anything is sent, and nothing is half-staged.
"""

from __future__ import annotations

import http.server
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_cli import write_csv

from batch_sender.sources.csvfile import MAX_FIELD_CHARS

GOOD = "to,name\n27821000001,Ann\n27821000002,Bo\n"


def staged_campaigns(tmp_path: Path) -> int:
    db = tmp_path / "results.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "campaigns" not in tables:
            return 0
        return int(con.execute("SELECT count(*) FROM campaigns").fetchone()[0])
    finally:
        con.close()


def one_error_line(stderr: str) -> str:
    """The single `batch-sender: error:` line; nothing else on stderr but INFO log lines."""
    lines = [line for line in stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("batch-sender: error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b'to,name\n27821000001,"Ann\n27821000002,Bo\n', "quoted field is never closed"),
        (b"to,name\n27821000001,Ann,extra,more\n", "4 fields where the header has 2"),
        (b"to,name\n27821000001,A\x00nn\n", "NUL byte"),
        (b"to,name\n27821000001,\xff\xfeAnn\n", "not valid UTF-8"),
        (b"to,name\n27821000001," + b"x" * 10_000_000 + b"\n", f"longer than {MAX_FIELD_CHARS}"),
        (b"", "the file is empty"),
        (b"to,name\n", "header row only"),
        (GOOD.encode() + b'27821000003,"Cy\n', "line 4"),  # a bad row far from the header
    ],
    ids=[
        "unbalanced-quote",
        "ragged",
        "nul",
        "bad-utf8",
        "10mb-field",
        "empty",
        "header-only",
        "late-bad-row",
    ],
)
def test_a_malformed_csv_is_refused_with_one_line_and_nothing_staged(
    bs, simulator, tmp_path, content, expect
):
    src = tmp_path / "bad.csv"
    src.write_bytes(content)
    out = bs("run", str(src), "--text", "Hi {name}", sim=simulator)
    assert out.exit_code == 2, out.stdout + out.stderr
    assert expect in one_error_line(out.stderr)
    assert "bad.csv" in out.stderr  # names the file
    assert staged_campaigns(tmp_path) == 0
    assert simulator.requests == 0


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--text", "Hi {nmae}"], "unknown placeholder {nmae}"),
        (["--text", "Hi {name"], "expected '}'"),
        (["--text", "Hi", "--from", "far too long a sender"], "sender ID"),
        (["--text", "Hi", "--country", "XX"], "unknown country 'XX'"),
        (["--text", "Hi", "--delimiter", "ab"], "one character"),
        (["--text", "Hi", "--udh", "zz"], "not hex"),
        (["--text", "Hi", "--to-column", "phone"], "no 'phone' column"),
        (["--text", "Hi", "--binary", "--unicode"], "do not go together"),
    ],
)
def test_bad_options_and_templates_are_refused_before_staging(
    bs, simulator, tmp_path, args, expect
):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "Ann")])
    out = bs("run", str(src), *args, sim=simulator)
    assert out.exit_code == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert expect in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "rror" in ln]
    assert len(errors) == 1, out.stderr
    assert staged_campaigns(tmp_path) == 0
    assert simulator.requests == 0


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--chunk-size", "0"], "--chunk-size"),
        (["--chunk-size", "301"], "--chunk-size"),
        (["--concurrency", "0"], "--concurrency"),
        (["--rate", "-1"], "--rate"),
        (["--max-wait", "abc"], "--max-wait"),
        (["--callback", "9"], "--callback"),
        (["--param", "colour=red"], "--param"),
        (["--read-timeout", "0"], "--read-timeout"),
    ],
)
def test_bad_option_values_are_usage_errors(bs, simulator, tmp_path, args, expect):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "Ann")])
    out = bs("run", str(src), "--text", "Hi", *args, sim=simulator)
    assert out.exit_code == 2
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and expect in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert staged_campaigns(tmp_path) == 0


def test_a_bad_backoff_scale_in_the_environment_is_an_input_error(bs, simulator, tmp_path):
    src = write_csv(tmp_path / "c.csv", [("27821000001", "Ann")])
    out = bs(
        "run", str(src), "--text", "Hi", sim=simulator, env={"BATCH_SENDER_BACKOFF_SCALE": "x"}
    )
    assert out.exit_code == 2
    assert "BATCH_SENDER_BACKOFF_SCALE" in one_error_line(out.stderr)


# --- the gateway is not there, or not a SOAP gateway ---------------------------------------


@pytest.fixture
def html_server() -> Iterator[str]:
    """An HTTP server that answers every request with a 200 HTML page (a captive portal, say)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b"<html><body><h1>Welcome</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/soap/document_literal/webservice"
    server.shutdown()
    server.server_close()


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/soap/document_literal/webservice"


@pytest.mark.parametrize("target", ["closed-port", "html", "ftp"])
def test_an_unreachable_or_non_soap_gateway_is_exit_2_and_nothing_is_sent(
    bs, simulator, tmp_path, html_server, target
):
    url = {
        "closed-port": _closed_port_url(),
        "html": html_server,
        "ftp": "ftp://127.0.0.1/soap",
    }[target]
    src = write_csv(tmp_path / "c.csv", [("27821000001", "Ann"), ("27821000002", "Bo")])
    out = bs("run", str(src), "--text", "Hi", "--name", "g", sim=simulator,
             env={"BATCH_SENDER_GATEWAY_URL": url})  # fmt: skip
    assert out.exit_code == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("batch-sender: error:")]
    assert len(errors) == 1 and errors[0] == out.stderr.strip().splitlines()[-1]
    assert "gateway" in errors[0]
    if staged_campaigns(tmp_path):  # staged whole (resumable), never claimed, never sent
        con = sqlite3.connect(tmp_path / "results.db")
        statuses = {r[0] for r in con.execute("SELECT status FROM results")}
        con.close()
        assert statuses == {"pending"}
    assert simulator.requests == 0


# --- the results database cannot be written ------------------------------------------------


@pytest.mark.parametrize("kind", ["under-a-file", "not-a-database"])
def test_an_unusable_results_database_is_exit_2_with_one_line(bs, simulator, tmp_path, kind):
    blocker = tmp_path / "blocker"
    if kind == "under-a-file":  # root ignores directory permissions; a file is no directory
        blocker.write_text("a file, not a directory")
        url = f"sqlite:///{blocker / 'results.db'}"
    else:
        blocker.write_bytes(b"this is not an SQLite database " * 200)
        url = f"sqlite:///{blocker}"
    src = write_csv(tmp_path / "c.csv", [("27821000001", "Ann")])
    out = bs("run", str(src), "--text", "Hi", sim=simulator, env={"BATCH_SENDER_DB": url})
    assert out.exit_code == 2
    assert "results database" in one_error_line(out.stderr)
    assert simulator.requests == 0


def test_the_console_script_never_prints_a_traceback(bs_script, simulator, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_bytes(b"to,name\n27821000001,\xff\n")
    out = bs_script("run", str(src), "--text", "Hi", sim=simulator)
    assert out.returncode == 2
    assert "not valid UTF-8" in one_error_line(out.stderr)
    assert simulator.requests == 0
