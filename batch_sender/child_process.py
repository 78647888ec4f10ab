"""What a run's helper processes share: how they are started, and how they end with the run.

A helper is ``python -m <module>`` with this process's import path, speaking pickle over its
stdin and stdout (the sending process, ``send.pool``; the preparing process,
``prepare_process``). It asks the kernel to kill it when its parent dies, and leaves Ctrl-C and
SIGTERM to the parent, which decides what an interrupted run does and tells (or kills) it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

__all__ = ["adopt", "command", "environment"]

_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def command(module: str) -> tuple[str, ...]:
    """The command that starts ``module``'s ``__main__`` with this interpreter."""
    return (sys.executable, "-m", module)


def environment() -> dict[str, str]:
    """This process's environment, with its import path: the child runs the same code."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}


def adopt() -> bool:
    """In the child, first thing: die with the parent (Linux; elsewhere end of input does) and
    ignore the signals a whole process group gets. False if the parent is already gone."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        return False
    # the parent handles Ctrl-C and SIGTERM and tells us to stop: a signal to the whole process
    # group must not cut short what it is waiting for
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return True
