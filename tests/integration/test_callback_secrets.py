"""The receiver's secrets stay out of ``ps`` (issue 16, item 7): through the real console script.

``batch-sender callbacks`` takes its token and basic-auth ``USER:PASSWORD`` from a chmod-600 file
(``--token-file``, ``--basic-auth-file``) or the environment; the old flags still work but warn.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

TOKEN = "tok-5Jd8s0aQ"
PASSWORD = "cb-pw-Z3n4"


def _exe() -> str:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    return exe


class Receiver:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def status(self, query: str = "", auth: str | None = None) -> int:
        request = urllib.request.Request(self.url + "cb" + query)
        if auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def cmdline(self) -> str:
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[object]:
    """``receiver(*args, env=...)``: a started ``batch-sender callbacks`` on a free port."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Receiver:
        full = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_SENDER_CALLBACK")}
        full["BATCH_SENDER_DB"] = f"sqlite:///{tmp_path / 'results.db'}"
        full.update(env or {})
        proc = subprocess.Popen(
            [_exe(), "callbacks", "--port", "0", *args],
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stderr:
            lines.append(line)
            match = re.search(r"receiving delivery callbacks at (\S+)", line)
            if match:
                receiver = Receiver(proc, match[1])
                receiver.early_stderr = "".join(lines)  # type: ignore[attr-defined]
                return receiver
        raise AssertionError(f"the receiver did not start: {''.join(lines)}")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_token_and_password_come_from_0600_files_and_never_show_in_ps(
    receiver, tmp_path: Path
) -> None:
    token = private(tmp_path / "token", TOKEN)
    auth = private(tmp_path / "auth", f"clickatell:{PASSWORD}")
    rx = receiver("--token-file", str(token), "--basic-auth-file", str(auth))
    assert "warning" not in rx.early_stderr
    assert TOKEN not in rx.cmdline() and PASSWORD not in rx.cmdline()
    good = f"clickatell:{PASSWORD}"
    # either secret lets a request past (400 after: no callback in it), a wrong one is 403
    assert rx.status() == 401
    assert rx.status("?token=wrong", auth="clickatell:wrong") == 403
    assert rx.status(f"?token={TOKEN}") == 400
    assert rx.status("", auth=good) == 400


def test_the_environment_works_without_a_warning(receiver) -> None:
    rx = receiver(
        env={
            "BATCH_SENDER_CALLBACK_TOKEN": TOKEN,
            "BATCH_SENDER_CALLBACK_AUTH": f"clickatell:{PASSWORD}",
        }
    )
    assert "warning" not in rx.early_stderr
    assert TOKEN not in rx.cmdline()
    assert rx.status("?token=wrong", auth="clickatell:wrong") == 403
    assert rx.status(f"?token={TOKEN}") == 400
    assert rx.status("", auth=f"clickatell:{PASSWORD}") == 400


def test_the_old_flags_still_work_but_warn_they_show_in_ps(receiver) -> None:
    rx = receiver("--token", TOKEN, "--basic-auth", f"clickatell:{PASSWORD}")
    assert "--token is visible to every user in ps" in rx.early_stderr
    assert "--basic-auth is visible to every user in ps" in rx.early_stderr
    assert rx.status("?token=wrong", auth="clickatell:wrong") == 403
    assert rx.status(f"?token={TOKEN}") == 400


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    token = private(tmp_path / "token", TOKEN, mode)
    env = {**os.environ, "BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'results.db'}"}
    out = subprocess.run(
        [_exe(), "callbacks", "--port", "0", "--token-file", str(token)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert f"chmod 600 {token}" in out.stderr
    assert TOKEN not in out.stderr


def test_a_token_given_both_ways_is_refused(tmp_path: Path) -> None:
    token = private(tmp_path / "token", TOKEN)
    env = {**os.environ, "BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'results.db'}"}
    out = subprocess.run(
        [_exe(), "callbacks", "--port", "0", "--token-file", str(token), "--token", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 2 and "not both" in out.stderr, out.stderr
