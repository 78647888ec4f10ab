"""How many pending rows a claim selects to make ``count`` chunks of up to ``size``.

A claim reads every row it selects (and a locking claim, ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL and MariaDB, locks them) but makes chunks only of its first ``count`` messages.
With distinct texts (one recipient per message) a limit of ``size * count`` selected a hundred
rows for each one claimed: on PostgreSQL most of a worker's CPU, and rows its peers had to
skip; on SQLite, whose claim packs the selected rows per message, 55% of claiming a million
one-recipient messages (docs/PERFORMANCE.md). So the limit follows the recipients per message
the campaign's last claim met.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["limit", "per_message", "per_message_of"]


def limit(met: int | None, size: int, count: int) -> int:
    """Rows to select for ``count`` chunks of up to ``size``: ``count`` messages of the size
    the last claim ``met`` (None: no claim yet), twice over, never more than ``size * count``."""
    full = size * count
    if met is None:
        return full
    return max(count, min(full, 2 * met * count))


def per_message(rows: Sequence[Any], size: int, selected_limit: int) -> int:
    """Recipients per message (1 to ``size``) of the non-empty ``rows`` (with ``message_id``,
    in message order) a claim selected under ``selected_limit``."""
    messages = 1 + sum(1 for a, b in itertools.pairwise(rows) if a.message_id != b.message_id)
    return per_message_of(len(rows), messages, size, selected_limit)


def per_message_of(selected: int, messages: int, size: int, selected_limit: int) -> int:
    """Recipients per message (1 to ``size``) of a claim that selected ``selected`` rows (at
    least one) of ``messages`` messages under ``selected_limit``. A single message cut off by
    the limit counts as full, so a campaign of large messages claims full chunks next time."""
    if selected == selected_limit and messages == 1:
        return size
    return max(1, min(size, -(-selected // messages)))
