"""``python -m batch_sender.simulator``: the same command as ``batch-sender simulator``.

Example: ``python -m batch_sender.simulator --port 8099 --latency-ms 20 --fault drop_after=0.01``
"""

from __future__ import annotations

import logging
import os


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted (``batch-sender simulator --help`` lists the options)."""
    from batch_sender.cli.admin import simulator

    verbose = bool(argv and ("-v" in argv or "--verbose" in argv))
    if argv is not None:
        argv = [a for a in argv if a not in ("-v", "--verbose")]
    level = logging.DEBUG if verbose or os.environ.get("BATCH_SENDER_VERBOSE") else logging.INFO
    logging.basicConfig(level=level)
    simulator.main(
        args=argv,
        prog_name="python -m batch_sender.simulator",
        help_option_names=["-h", "--help"],
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
