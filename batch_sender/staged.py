"""A source row after prepare: what staging takes (``Store.stage_campaign``).

Its own module, importing nothing of the store: the process that prepares a large file's rows
(``prepare_process``) needs these shapes but not the database's libraries. ``store.records``
gives the same names.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["STAGED_FIELDS", "STAGED_STATUS", "StagedRow", "StagedValues"]


class StagedRow(NamedTuple):
    """One source row after prepare: its number, state, and payload (None when rejected).

    What :meth:`Store.stage_campaign` takes; the store alone turns it into what its database
    takes (the column tuples of a bulk insert, COPY rows), unpacking each row in the order of
    its field names, which ``store/staging.py`` checks against them on import. A named tuple,
    not a dataclass: rows written by hand (tests, scripts) use it; prepare yields the same fields
    as plain tuples (:data:`StagedValues`), a million of which cost less than named ones.
    """

    row_no: int
    msisdn: str
    #: a :class:`Status` value; prepare passes the plain string (``Status.PENDING.value``):
    #: binding a str subclass costs the sqlite3 module an adapter lookup per row
    status: str
    parts: int = 0
    digest: str | None = None  # identity of the payload; equal digests share one messages row
    wire_text: str | None = None
    unicode: bool = False
    error_code: str | None = None  # why it was rejected, if it was
    error_description: str | None = None
    fields: str | None = None  # the source row, a JSON object of column → value


#: A :class:`StagedRow`'s fields as a plain tuple, in the same order: what prepare yields, one
#: per source row. Building the named tuple instead (even in C, ``tuple.__new__(StagedRow, …)``)
#: cost 0.33 µs a row of a staging whose prepare is about 1.2 µs; everything that takes staged
#: rows (the store, the dry run, ``--max-rejected``) unpacks them by position, so both forms are
#: accepted wherever one is, and :data:`STAGED_FIELDS` keeps the positions true to the names.
StagedValues = tuple[
    int, str, str, int, str | None, str | None, bool, str | None, str | None, str | None
]
STAGED_FIELDS = StagedRow._fields
#: where a staged row's status is (``--max-rejected`` counts the rejected rows as they pass)
STAGED_STATUS = STAGED_FIELDS.index("status")
