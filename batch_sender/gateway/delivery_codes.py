"""Clickatell's message status codes (clickatell-api.md §6.1): names, finality and their order.

A message moves 008 (accepted) → 003 (handed to the network) → one final status. Callbacks may
arrive late, twice, or out of order; :func:`supersedes` decides whether a newly reported status
replaces the one recorded: never a final one by another, never a later stage by an earlier one.
"""

from __future__ import annotations

import re

__all__ = [
    "DELIVERED",
    "FAILED_FINAL",
    "FINAL_CODES",
    "NAMES",
    "is_final",
    "name_of",
    "normalise",
    "rank",
    "supersedes",
]

#: Status code → the gateway's own name for it.
NAMES: dict[str, str] = {
    "001": "Message unknown",
    "002": "Message queued",
    "003": "Delivered to gateway",
    "004": "Received by recipient",
    "005": "Error with message",
    "006": "User cancelled message delivery",
    "007": "Error delivering message",
    "008": "OK",
    "009": "Routing error",
    "010": "Message expired",
    "011": "Message queued for later delivery",
    "012": "Out of credit",
    "014": "Maximum MT limit exceeded",
}

DELIVERED = "004"  # handset receipt confirmed
#: Final statuses that mean the message did not arrive.
FAILED_FINAL = frozenset({"005", "006", "007", "009", "010", "012", "014"})
#: Statuses that never change again.
FINAL_CODES = frozenset({DELIVERED, *FAILED_FINAL})

# Progress of a message; a status only replaces one of lower rank.
_RANKS: dict[str, int] = {
    "001": 0,  # unknown to the gateway (yet): says nothing
    "008": 1,  # accepted
    "002": 2,  # queued
    "011": 2,  # queued for later delivery
    "003": 3,  # handed to the upstream network
}
_FINAL_RANK = 9
_CODE = re.compile(r"[0-9]{1,3}\Z")


def normalise(value: str) -> str | None:
    """The 3-digit form of a status as sent (``"4"``, ``"004"`` → ``"004"``); None if not one."""
    value = value.strip()
    if not _CODE.match(value):
        return None
    return value.zfill(3)


def is_final(code: str | None) -> bool:
    """Whether ``code`` is a final status (delivered or failed for good)."""
    return code in FINAL_CODES


def rank(code: str | None) -> int:
    """How far along a message with this status is (-1: no status yet)."""
    if code is None:
        return -1
    if code in FINAL_CODES:
        return _FINAL_RANK
    return _RANKS.get(code, 0)


def supersedes(new: str, current: str | None) -> bool:
    """Whether status ``new`` replaces the recorded ``current`` (out-of-order and repeat safe)."""
    return rank(new) > rank(current)


def name_of(code: str | None) -> str | None:
    """The status's name, ``"Status 013"`` for a code the table lacks, None for no status."""
    if code is None:
        return None
    return NAMES.get(code, f"Status {code}")
