"""After the send: delivery receipts (callbacks), tracking with ``querymsg``, and cost.

``statuses`` knows the gateway's status codes, ``callbacks`` is the receipt receiver,
``track`` polls ``querymsg``, ``cost`` estimates credits and checks the balance. The SQL lives
in :mod:`batch_sender.store.delivery`.
"""

from __future__ import annotations
