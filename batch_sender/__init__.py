"""batch-sender: bulk SMS through Clickatell's SOAP API, with a SQL record of every recipient.

The library behind the ``batch-sender`` command. A whole campaign, against the built-in
simulator (the same code talks to the real gateway with real credentials)::

    >>> import pathlib, tempfile
    >>> from batch_sender import GatewaySettings, RunSettings, Simulator, Store
    >>> from batch_sender import open_client, run, sources
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "c.csv").write_text("to,name\\n27821234567,Ann\\n27821234568,Ben\\n")
    >>> with Simulator().start() as sim, Store.open(f"sqlite:///{folder}/r.db") as store:
    ...     gateway = GatewaySettings(sim.url, *sim.credentials)
    ...     result = run(
    ...         RunSettings(name="hello", text="Hi {name}"),
    ...         source=sources.open_csv(folder / "c.csv"),
    ...         store=store,
    ...         client=open_client(gateway, max_connections=2),
    ...     )
    >>> result.counts, result.exit_code
    ({'sent': 2}, 0)

Every name below is imported on first use, so ``import batch_sender`` (and ``batch-sender
--help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batch_sender import sources
    from batch_sender.campaign import RunResult, dry_run, fingerprint, open_client, run
    from batch_sender.config import GatewaySettings, MessageOptions, RunSettings
    from batch_sender.errors import BatchSenderError
    from batch_sender.prepare import DryRunReport
    from batch_sender.simulator import Simulator, SimulatorConfig
    from batch_sender.states import CampaignControl, CampaignStatus, Status
    from batch_sender.store import Store

__all__ = [
    "BatchSenderError",
    "CampaignControl",
    "CampaignStatus",
    "DryRunReport",
    "GatewaySettings",
    "MessageOptions",
    "RunResult",
    "RunSettings",
    "Simulator",
    "SimulatorConfig",
    "Status",
    "Store",
    "__version__",
    "dry_run",
    "fingerprint",
    "open_client",
    "run",
    "sources",
]

__version__ = "0.1.0"

#: public name -> the module that defines it
_HOMES = {
    "BatchSenderError": "batch_sender.errors",
    "CampaignControl": "batch_sender.states",
    "CampaignStatus": "batch_sender.states",
    "DryRunReport": "batch_sender.prepare",
    "GatewaySettings": "batch_sender.config",
    "MessageOptions": "batch_sender.config",
    "RunResult": "batch_sender.campaign",
    "RunSettings": "batch_sender.config",
    "Simulator": "batch_sender.simulator",
    "SimulatorConfig": "batch_sender.simulator",
    "Status": "batch_sender.states",
    "Store": "batch_sender.store",
    "dry_run": "batch_sender.campaign",
    "fingerprint": "batch_sender.campaign",
    "open_client": "batch_sender.campaign",
    "run": "batch_sender.campaign",
}


def __getattr__(name: str) -> Any:
    if name == "sources":
        return importlib.import_module("batch_sender.sources")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'batch_sender' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
