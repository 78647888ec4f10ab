"""Where recipients come from: a CSV file or a SQL query, both streamed as ``SourceRow``s.

Open a source with ``open_csv`` or ``open_sql`` (either raises ``InputError`` for a bad file,
header, URL or query before anything is staged), read ``columns`` and ``identity``, iterate once
(``records()`` gives the same rows as plain ``Record`` tuples, for hot loops).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batch_sender.sources.base import Record, Source, SourceRow
from batch_sender.sources.csvfile import CsvSource, open_csv, open_csv_stream

if TYPE_CHECKING:
    from batch_sender.sources.sql import SqlSource, open_sql

__all__ = [
    "CsvSource",
    "Record",
    "Source",
    "SourceRow",
    "SqlSource",
    "open_csv",
    "open_csv_stream",
    "open_sql",
]


def __getattr__(name: str) -> Any:
    """``SqlSource`` and ``open_sql`` on first use: SQLAlchemy is not imported for a CSV file
    (the process preparing a large file imports this package, and nothing of SQL)."""
    if name in ("SqlSource", "open_sql"):
        from batch_sender.sources import sql

        return getattr(sql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
