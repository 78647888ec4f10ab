"""Measure the simulator alone: sendmsg requests/s and recipients/s over keep-alive connections.

The simulator runs as its own process (``python -m batch_sender.simulator``), so its CPU time can
be read from /proc; the load comes from several processes, each with one keep-alive raw socket and
a pre-built request, which costs far less per request than the server's work.

    python benchmarks/bench_simulator.py [--seconds 5] [--connections 8] [--sizes 100,300]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_request(host: str, port: int, path: str, recipients: int) -> bytes:
    """One HTTP/1.1 sendmsg request with ``recipients`` ``<to>`` elements, ready to send."""
    to = "".join(f"<to>27{990000000 + i}</to>" for i in range(recipients))
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice">'
        "<SOAP-ENV:Body><ns1:sendmsg><api_id>123456</api_id><user>MyUserName</user>"
        "<password>MyPassword</password><text>Hello {name}, your order has shipped.</text>"
        f"{to}<climsgid>bench-000001</climsgid></ns1:sendmsg></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        'Content-Type: text/xml; charset=UTF-8\r\nSOAPAction: "sendmsg"\r\n'
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _client(host: str, port: int, request: bytes, deadline: float, out: mp.Queue[int]) -> None:
    """Send ``request`` over one keep-alive connection until ``deadline``; report the count."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done = 0
    buf = b""
    while time.time() < deadline:
        sock.sendall(request)
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        match = re.search(rb"Content-Length: (\d+)", head)
        assert match and head.startswith(b"HTTP/1.1 200"), head
        length = int(match[1])
        while len(buf) < length:
            buf += sock.recv(65536)
        assert b"<return>ID: " in buf[:length], buf[:300]
        buf = buf[length:]
        done += 1
    sock.close()
    out.put(done)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run(recipients: int, seconds: float, connections: int, url: str, pid: int) -> dict[str, float]:
    """One measurement: the request rate, recipient rate and server CPU for one request size."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = build_request(host, port, parts.path, recipients)
    out: mp.Queue[int] = mp.Queue()
    cpu0 = _cpu_seconds(pid)
    start = time.time()
    procs = [
        mp.Process(target=_client, args=(host, port, request, start + seconds, out))
        for _ in range(connections)
    ]
    for p in procs:
        p.start()
    total = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.time() - start
    cpu = _cpu_seconds(pid) - cpu0
    return {
        "recipients": recipients,
        "requests_s": total / elapsed,
        "recipients_s": total * recipients / elapsed,
        "cpu_pct": 100.0 * cpu / elapsed,
        "us_per_request": 1e6 * cpu / max(total, 1),
    }


def main() -> None:
    """Start the simulator, measure each request size, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--sizes", default="100,300", help="recipients per request")
    parser.add_argument("--record", action="store_true", help="also write a --record file")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "batch_sender.simulator", "--port", "0", "--no-keep-messages"]
    if args.record:
        cmd += ["--record", "/tmp/bench_simulator_record.jsonl"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = line.split()[-1]
        print(
            f"simulator pid {server.pid} at {url}; {args.connections} keep-alive connections, "
            f"{args.seconds:g} s per size, record={'on' if args.record else 'off'}"
        )
        print(
            f"{'to/request':>10} {'requests/s':>11} {'recipients/s':>13} {'server CPU':>10} "
            f"{'CPU µs/req':>11}"
        )
        for size in (int(s) for s in args.sizes.split(",")):
            r = run(size, args.seconds, args.connections, url, server.pid)
            print(
                f"{size:>10} {r['requests_s']:>11.0f} {r['recipients_s']:>13.0f} "
                f"{r['cpu_pct']:>9.0f}% {r['us_per_request']:>11.0f}"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
