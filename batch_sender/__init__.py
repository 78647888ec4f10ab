"""batch-sender: bulk SMS through Clickatell's SOAP API, with a SQL record of every recipient.

The library behind the ``batch-sender`` command. The usual entry points::

    from batch_sender import campaign, sources, Store, RunSettings
    with Store.open("sqlite:///results.db") as store:
        client = campaign.open_client(gateway, max_connections=4)
        source = sources.open_csv("c.csv")
        result = campaign.run(settings, source=source, store=store, client=client)
"""

from __future__ import annotations

from batch_sender.config import GatewaySettings, MessageOptions, RunSettings
from batch_sender.errors import BatchSenderError
from batch_sender.states import Status

__all__ = [
    "BatchSenderError",
    "GatewaySettings",
    "MessageOptions",
    "RunSettings",
    "Status",
    "__version__",
]

__version__ = "0.1.0"
