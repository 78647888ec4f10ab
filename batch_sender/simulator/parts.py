"""Message part counting as the gateway sees it, kept independent of the client's ``sms`` module.

The simulator counts parts on its own (clickatell-api.md §8) so that a client that miscounts is
caught by an ``ERR: 113`` or a credit mismatch instead of agreeing with itself.
"""

from __future__ import annotations

__all__ = ["binary_parts", "text_parts"]

GSM_SINGLE = 160  # septets in a one-part GSM 03.38 message
GSM_PER_PART = 153  # septets per part of a concatenated GSM message (6-byte UDH)
UCS2_SINGLE = 70  # UCS-2 units in a one-part unicode message
UCS2_PER_PART = 67  # UCS-2 units per part of a concatenated unicode message
BINARY_SINGLE = 140  # octets (UDH + data) in a one-part binary message
BINARY_PER_PART = 134  # data octets per part of a concatenated binary message

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")


def _ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b for positive b."""
    return -(-a // b)


def text_parts(text: str, unicode: bool) -> int:
    """Parts needed for ``text`` as it arrives on the wire (hex UCS-2 when ``unicode``)."""
    if unicode:
        units = len(text) // 4
        return 1 if units <= UCS2_SINGLE else _ceil_div(units, UCS2_PER_PART)
    if text.isascii() and not any(c in _GSM_EXTENSION for c in text):
        septets = len(text)  # fast path: plain ASCII without escaped characters
        return 1 if septets <= GSM_SINGLE else _ceil_div(septets, GSM_PER_PART)
    # Characters outside GSM 03.38 would be substituted by the gateway: one septet each.
    widths = [2 if c in _GSM_EXTENSION else 1 for c in text]
    if sum(widths) <= GSM_SINGLE:
        return 1
    parts, used = 1, 0
    for width in widths:  # greedy split that never cuts an escape pair
        if used + width > GSM_PER_PART:
            parts, used = parts + 1, 0
        used += width
    return parts


def binary_parts(udh_hex: str, data_hex: str) -> int:
    """Parts needed for a binary message: UDH plus data octets, 140 per message."""
    octets = (len(udh_hex) + len(data_hex)) // 2
    if octets <= BINARY_SINGLE:
        return 1
    return _ceil_div(len(data_hex) // 2, BINARY_PER_PART)
