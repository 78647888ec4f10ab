"""The receiver faces the internet (issue 16, item 4, its malformed-request part): raw sockets
against the real ``batch-sender callbacks`` process.

A malformed or over-long request line is answered with a 4xx at once; clients that go away
(reset before the answer) print no traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[tuple[str, int], subprocess.Popen[str]]]:
    exe = shutil.which("batch-sender", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the batch-sender console script is not installed (pip install -e .)")
    env = {**os.environ, "BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'results.db'}"}
    proc = subprocess.Popen(
        [exe, "callbacks", "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"receiving delivery callbacks at http://([0-9.]+):([0-9]+)/", line)
        if match:
            break
    else:
        raise AssertionError("the receiver did not start")
    yield (match[1], int(match[2])), proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def stopped_stderr(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the receiver; everything it printed after starting."""
    time.sleep(0.3)  # let the handler threads finish with the last connections
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return err


def answer(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; the first bytes of the answer (within 3 s)."""
    with socket.create_connection(address, timeout=3) as sock:
        sock.sendall(data)
        return sock.recv(100)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1 extra words\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"4"),  # uvicorn: 400
    ],
    ids=["one-word", "too-many-words", "64KB-url"],
)
def test_a_malformed_request_gets_a_4xx_at_once_and_no_traceback(
    receiver, request_bytes: bytes, status: bytes
) -> None:
    address, proc = receiver
    started = time.monotonic()
    first = answer(address, request_bytes)
    assert first.startswith(b"HTTP/1.1 " + status), first
    assert re.match(rb"HTTP/1.1 4\d\d ", first), first
    assert time.monotonic() - started < 2
    err = stopped_stderr(proc)
    assert "Traceback" not in err and "AttributeError" not in err, err


def test_clients_that_go_away_print_no_traceback(receiver) -> None:
    address, proc = receiver
    for _ in range(60):  # a reset right after the request: the answer meets a dead socket
        sock = socket.create_connection(address)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /?apiMsgId=abc&status=004 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.close()
    assert answer(address, b"GET /?status=004 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 400"
    )  # and it still serves
    err = stopped_stderr(proc)
    assert "Traceback" not in err, err
    assert "Error" not in err, err
