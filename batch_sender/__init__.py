"""batch-sender: bulk SMS through Clickatell's SOAP API, with an exact SQL record of every recipient.

The library behind the ``batch-sender`` command. The usual entry points::

    from batch_sender import campaign, sources, Store, RunSettings
    with Store.open("sqlite:///results.db") as store, campaign.open_client(gateway, ...) as client:
        result = campaign.run(settings, source=sources.open_csv("c.csv"), store=store, client=client)
"""

from __future__ import annotations

from batch_sender.config import GatewaySettings, MessageOptions, RunSettings
from batch_sender.errors import BatchSenderError
from batch_sender.states import Status

__all__ = ["BatchSenderError", "GatewaySettings", "MessageOptions", "RunSettings", "Status", "__version__"]

__version__ = "0.1.0"
