"""The gateway layer: Clickatell's SOAP wire format (``wire``) and the HTTP client (``client``).

One SOAP call in, one typed result out, no retries: policy lives in ``batch_sender.send.policy``.
"""

from __future__ import annotations

from batch_sender.gateway.client import Credentials, GatewayClient, Message
from batch_sender.gateway.wire import MessageCharge, MessageStatus, Receipt

__all__ = [
    "Credentials",
    "GatewayClient",
    "Message",
    "MessageCharge",
    "MessageStatus",
    "Receipt",
]
