"""Measure the gateway client alone: requests/s, recipients/s and client CPU per request.

The simulator runs in a subprocess (``python -m batch_sender.simulator``), so this process's CPU
time is the client's own: envelope building, HTTP over keep-alive, response parsing. Eight
threads share one :class:`GatewayClient`, as the sender's workers do.

Usage: ``python benchmarks/bench_client.py [--seconds 5] [--threads 8] [--sizes 100,300]``
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from batch_sender.gateway import Credentials, GatewayClient, Message, wire  # noqa: E402

STARTUP_TIMEOUT = 10.0  # seconds to wait for the simulator to listen
TEXT = "Your appointment is tomorrow at 10:00. Reply STOP to opt out."


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    """Start the simulator subprocess and wait until it accepts connections."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "batch_sender.simulator", "--port", str(port),
            "--no-keep-messages"]  # fmt: skip
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(
        f"simulator did not start: {process.stderr.read().decode() if process.stderr else ''}"
    )


def run(client: GatewayClient, size: int, threads: int, seconds: float) -> dict[str, float]:
    """Send ``size``-number requests from ``threads`` threads for ``seconds``; the figures."""
    numbers = [f"2799{i:07d}" for i in range(size)]
    message = Message(text=TEXT)
    stop = threading.Event()
    counts = [0] * threads

    def work(slot: int) -> None:
        while not stop.is_set():
            receipts = client.sendmsg(numbers, message, climsgid=f"bench-{slot}")
            assert len(receipts) == size
            counts[slot] += 1

    client.sendmsg(numbers, message)  # warm up: session, connections
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    requests = sum(counts)
    return {
        "requests_s": requests / wall,
        "recipients_s": requests * size / wall,
        "cpu_ms": cpu / requests * 1000,
    }


def micro(size: int) -> tuple[float, float]:
    """Microseconds to build one ``size``-number sendmsg and to parse its answer."""
    to = [f"2799{i:07d}" for i in range(size)]
    params = {"session_id": "0" * 32, "text": TEXT, "to": to, "climsgid": "c-1"}
    returns = "".join(f"<return>ID: {i:032x} To: {n}</return>" for i, n in enumerate(to))
    body = (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{wire.ENVELOPE_NS}" xmlns:ns1="{wire.NS}">'
        f"<SOAP-ENV:Body><ns1:sendmsgResponse>{returns}</ns1:sendmsgResponse>"
        "</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()
    n = 2000
    build = timeit.timeit(lambda: wire.build_request("sendmsg", params), number=n) / n
    parse = timeit.timeit(
        lambda: [wire.parse_return(x) for x in wire.parse_response(body, "sendmsg")], number=n
    ) / n  # fmt: skip
    return build * 1e6, parse * 1e6


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run")
    parser.add_argument("--threads", type=int, default=8, help="threads = connections")
    parser.add_argument("--sizes", default="100,300", help="numbers per request, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"{'to/request':>10} {'build µs':>9} {'parse µs':>9}")
    for size in sizes:
        build, parse = micro(size)
        print(f"{size:>10} {build:>9.1f} {parse:>9.1f}")

    port = free_port()
    simulator = start_simulator(port)
    try:
        url = f"http://127.0.0.1:{port}/soap/document_literal/webservice"
        credentials = Credentials("123456", "MyUserName", "MyPassword")
        with GatewayClient(
            url=url, credentials=credentials, max_connections=args.threads
        ) as client:
            print(f"\n{args.threads} threads over {args.threads} keep-alive connections, "
                  f"{args.seconds:g} s per run, simulator in a subprocess")  # fmt: skip
            print(f"{'to/request':>10} {'requests/s':>11} {'recipients/s':>13} {'CPU ms/req':>11}")
            for size in sizes:
                r = run(client, size, args.threads, args.seconds)
                print(
                    f"{size:>10} {r['requests_s']:>11.0f} {r['recipients_s']:>13.0f} "
                    f"{r['cpu_ms']:>11.2f}"
                )
    finally:
        simulator.terminate()
        simulator.wait(timeout=STARTUP_TIMEOUT)


if __name__ == "__main__":
    main()
