"""After the send: delivery receipts (callbacks), tracking with ``querymsg``, and cost.

``callbacks`` is the receipt receiver, ``track`` polls ``querymsg``, ``cost`` estimates credits
and checks the balance. The SQL lives in :mod:`batch_sender.store.delivery`, the gateway's status
codes in :mod:`batch_sender.gateway.delivery_codes`.
"""

from __future__ import annotations
