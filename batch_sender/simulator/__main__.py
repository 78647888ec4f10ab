"""``python -m batch_sender.simulator``: serve the simulated gateway from the command line.

Example: ``python -m batch_sender.simulator --port 8099 --latency-ms 20 --fault drop_after=0.01``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from batch_sender.simulator.config import DEFAULT_PORT, FAULT_KINDS, SimulatorConfig
from batch_sender.simulator.server import serve


def _pair(value: str) -> tuple[str, str]:
    key, sep, item = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, item


def build_parser() -> argparse.ArgumentParser:
    """The command-line options, one per configuration field that matters outside tests."""
    p = argparse.ArgumentParser(prog="python -m batch_sender.simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    p.add_argument("--api-id", help="accepted api_id (default: $CLICKATELL_API_ID or 123456)")
    p.add_argument("--user", help="accepted user (default: $CLICKATELL_USER or MyUserName)")
    p.add_argument("--password", help="accepted password (default: $CLICKATELL_PASSWORD)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before every answer")
    p.add_argument("--record", type=Path, help="append one JSON line per accepted message")
    p.add_argument("--credits", type=float, default=1e9, help="starting balance")
    p.add_argument("--max-mps", type=float, help="messages per second before ERR 130")
    p.add_argument("--session-ttl", type=float, default=900.0, help="session inactivity expiry (s)")
    p.add_argument("--callback-url", help="POST delivery callbacks here when msg_callback asks")
    p.add_argument(
        "--number-error",
        type=_pair,
        action="append",
        default=[],
        metavar="NUMBER=CODE",
        help="answer ERR CODE for this number or prefix (repeatable)",
    )
    p.add_argument(
        "--unroutable",
        action="append",
        default=[],
        metavar="PREFIX",
        help="answer ERR 114 for numbers with this prefix (repeatable)",
    )
    p.add_argument(
        "--fault",
        type=_pair,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help=f"random fault rate per sendmsg request; kinds: {', '.join(sorted(FAULT_KINDS))}",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random faults")
    p.add_argument(
        "--no-keep-messages",
        action="store_true",
        help="do not keep accepted messages in memory (long benchmarks)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Turn parsed options into a :class:`SimulatorConfig` (unset credentials use the defaults)."""
    credentials = {
        name: value
        for name, value in (
            ("api_id", args.api_id),
            ("user", args.user),
            ("password", args.password),
        )
        if value is not None
    }
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        record=args.record,
        credits=args.credits,
        max_mps=args.max_mps,
        session_ttl=args.session_ttl,
        callback_url=args.callback_url,
        number_errors=dict(args.number_error),
        unroutable_prefixes=tuple(args.unroutable),
        fault_rates={kind: float(rate) for kind, rate in args.fault},
        seed=args.seed,
        keep_messages=not args.no_keep_messages,
        **credentials,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse options and serve until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO)
    serve(config_from_args(args))


if __name__ == "__main__":
    main()
