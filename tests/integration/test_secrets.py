"""No secret in any output (issue 16, item 6): a gateway that echoes secrets, over real HTTP.

`batch-sender run -v` against a simulator that echoes the session ID into every sendmsg error
(per number and request-level) or ``user/password`` into ERR 001; then the secret must appear
nowhere: not on stderr (the ``-v`` log and the error line), not in ``results.error_description``,
not in ``report`` as a table, CSV, JSON or HTML.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import write_csv

pytestmark = pytest.mark.usefixtures("each_send_process")

FAST = {"BATCH_SENDER_BACKOFF_SCALE": "0.01"}


def numbers(n: int, start: int) -> list[str]:
    return [str(start + i) for i in range(n)]


def error_descriptions(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT error_description FROM results").fetchall()
    finally:
        con.close()
    return [r[0] for r in rows if r[0]]


def every_output(bs: Any, tmp_path: Path, name: str) -> str:
    """The report of ``name`` in every format, and the HTML page, as one text."""
    page = tmp_path / f"{name}.html"
    outs = [
        bs("report", name),
        bs("report", name, "--format", "csv"),
        bs("report", name, "--format", "json"),
        bs("report", name, "--html", str(page)),
    ]
    assert all(o.exit_code == 0 for o in outs), [o.stderr for o in outs]
    return "\n".join([*(o.stdout + o.stderr for o in outs), page.read_text(encoding="utf-8")])


def test_a_session_id_echoed_in_sendmsg_errors_is_in_no_output(
    bs: Any, make_simulator: Any, tmp_path: Path
) -> None:
    per_number = numbers(20, 27821000000)
    rejected = numbers(20, 27822000000)  # every number ERR 101: a request-level error
    sim = make_simulator(
        echo_secrets=frozenset({"session"}),
        number_errors={per_number[3]: "114", per_number[7]: "105", "27822": "101"},
        allowed_senders=frozenset({"Registered"}),
    )
    src = write_csv(tmp_path / "c.csv", [(m, "x") for m in per_number + rejected])
    sim.inject("expire_sessions")  # an old session echoed after a re-authentication, too
    out = bs(
        "-v", "run", str(src), "--text", "Hello", "--name", "s", "--chunk-size", "10",
        sim=sim, env=FAST,
    )  # fmt: skip
    assert out.exit_code == 1, out.stderr
    # a request-level stop code, its description echoed too, ends a second run on stderr
    stop = bs(
        "-v", "run", str(src), "--text", "Hello", "--name", "s2", "--from", "Unapproved",
        sim=sim, env=FAST,
    )  # fmt: skip
    assert stop.exit_code == 3, stop.stderr
    assert "Invalid Sender ID (session ***)" in stop.stderr

    stored = error_descriptions(tmp_path / "results.db")
    # the gateway did echo (so the test means something), and we blanked it out
    assert "Cannot route message (session ***)" in stored
    assert "Invalid or missing parameters (session ***)" in stored
    assert len(stored) == 22
    shown = "\n".join([out.stderr, stop.stderr, *stored, every_output(bs, tmp_path, "s")])
    assert "session ***" in shown
    sessions = sim.gateway.sessions_issued
    assert len(sessions) >= 2  # the first one expired and was echoed in the 003 that said so
    assert not [s for s in sessions if s in shown]


def test_a_password_echoed_in_err_001_is_in_no_output(
    bs: Any, make_simulator: Any, tmp_path: Path
) -> None:
    sim = make_simulator(echo_secrets=frozenset({"password"}))
    src = write_csv(tmp_path / "c.csv", [(m, "x") for m in numbers(5, 27821000000)])
    wrong = "Pw-9f3Kq7wz"
    out = bs(
        "-v", "run", str(src), "--text", "Hello", "--name", "p",
        sim=sim, env={**FAST, "CLICKATELL_PASSWORD": wrong},
    )  # fmt: skip
    assert out.exit_code == 3, out.stderr
    assert "Authentication failed for MyUserName/***" in out.stderr
    assert wrong not in out.stdout + out.stderr
    # authentication comes before the campaign is recorded: no report; nothing in the files
    for path in tmp_path.glob("results.db*"):
        assert wrong.encode() not in path.read_bytes()


def test_the_redactor_blanks_every_secret_longest_first_and_filters_log_records() -> None:
    import logging

    from batch_sender import redact

    r = redact.Redactor()
    assert r("nothing known yet") == "nothing known yet"
    r.add("abc", None, "", "abcdef")
    assert r("x abcdef y abc") == "x *** y ***"
    record = logging.LogRecord(
        "batch_sender", logging.INFO, __file__, 1, "%s said %s", ("gw", "abcdef"), None
    )
    assert redact.RedactingFilter(r).filter(record)
    assert record.getMessage() == "gw said ***"
