"""How many rows a locking claim (PostgreSQL, MariaDB: ``FOR UPDATE SKIP LOCKED``) selects.

Such a claim locks and reads every row it selects, but makes chunks only of its first
``count`` messages. With distinct texts (one recipient per message) a limit of
``size * count`` selected, locked and read a hundred rows for each one claimed: most of a
worker's CPU, and rows its peers had to skip. So the limit follows the recipients per message
the campaign's last claim met.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["limit", "per_message"]


def limit(met: int | None, size: int, count: int) -> int:
    """Rows to select for ``count`` chunks of up to ``size``: ``count`` messages of the size
    the last claim ``met`` (None: no claim yet), twice over, never more than ``size * count``."""
    full = size * count
    if met is None:
        return full
    return max(count, min(full, 2 * met * count))


def per_message(rows: Sequence[Any], size: int, selected_limit: int) -> int:
    """Recipients per message (1 to ``size``) of the non-empty ``rows`` (with ``message_id``,
    in message order) a claim selected under ``selected_limit``. A single message cut off by
    the limit counts as full, so a campaign of large messages claims full chunks next time."""
    messages = 1 + sum(1 for a, b in itertools.pairwise(rows) if a.message_id != b.message_id)
    if len(rows) == selected_limit and messages == 1:
        return size
    return max(1, min(size, -(-len(rows) // messages)))
