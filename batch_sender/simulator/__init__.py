"""A faithful, fast Clickatell document/literal SOAP gateway on loopback (DESIGN.md §6).

Used by the tests, the demo (``run --simulator``), the ``batch-sender simulator`` command and the
benchmarks. ``Simulator(SimulatorConfig(...)).start()``, then send to ``sim.url``.
"""

from __future__ import annotations

from batch_sender.simulator.config import FAULT_KINDS, Credentials, SimulatorConfig
from batch_sender.simulator.gateway import AcceptedMessage
from batch_sender.simulator.server import Simulator, serve

__all__ = ["FAULT_KINDS", "AcceptedMessage", "Credentials", "Simulator", "SimulatorConfig", "serve"]
