"""The latency-bound ceiling of the gateway client alone, without database or coordinator.

Usage: ``PYTHONPATH=. python benchmarks/bench_latency_client.py [--seconds 8] [--latency-ms 50]``.
``--threads`` threads (default 8, one keep-alive connection each) send ``sendmsg`` requests of
``--size`` numbers (default 100) back to back against the simulator (a subprocess) answering
after ``--latency-ms``; it prints recipients/s, the ratio to the bound threads × size / latency and
the round trip's median and 90th percentile. The latency scenario of ``run.py`` can only approach
this ratio: the difference is what claiming and recording cost the pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_client import free_port  # noqa: E402

from batch_sender.gateway.client import Credentials, GatewayClient, Message  # noqa: E402

TEXT = "Your parcel is ready for collection. Reply STOP to opt out."
STARTUP_S = 1.5  # seconds the simulator gets to start listening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of the run")
    parser.add_argument("--threads", type=int, default=8, help="threads = connections")
    parser.add_argument("--size", type=int, default=100, help="numbers per request")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the simulator's latency")
    args = parser.parse_args()
    port = free_port()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "batch_sender.simulator", "--port", str(port)]
        + ["--no-keep-messages", "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(STARTUP_S)
        client = GatewayClient(
            url=f"http://127.0.0.1:{port}/soap/document_literal/webservice",
            credentials=Credentials("123456", "MyUserName", "MyPassword"),
            max_connections=args.threads,
        )
        message = Message(text=TEXT)
        round_trips: list[float] = []
        end = time.monotonic() + args.seconds

        def work(slot: int) -> None:
            n = 0
            while time.monotonic() < end:
                base = 27990000000 + slot * 10_000_000 + n * args.size
                started = time.perf_counter()
                client.sendmsg(
                    [str(base + i) for i in range(args.size)],
                    message,
                    climsgid=f"{slot:04d}{n:028d}",
                )
                round_trips.append(time.perf_counter() - started)
                n += 1

        threads = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        client.close()
    finally:
        simulator.terminate()
        simulator.wait()
    rate = len(round_trips) * args.size / elapsed
    bound = args.threads * args.size / (args.latency_ms / 1000)
    deciles = statistics.quantiles(round_trips, n=10)
    print(
        f"{rate:,.0f} recipients/s = {rate / bound:.3f} of the bound {bound:,.0f}/s; round trip "
        f"median {statistics.median(round_trips) * 1000:.1f} ms, p90 {deciles[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
