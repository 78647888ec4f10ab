"""What every recipient source yields: numbered rows of text fields, streamed, closed when done."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Record", "Source", "SourceRow", "StreamOnce", "source_rows"]

#: A :class:`SourceRow` as a plain tuple, for hot loops: ``(row_no, line_no, number, values)``,
#: ``values`` in the order of the source's ``columns``. A million rows as objects with a dict of
#: fields each cost more than reading the file; the staging path never needs them.
Record = tuple[int, int, str, list[str]]


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One recipient row as the source holds it, before any normalisation or validation."""

    row_no: int  # 1-based data row number (header and blank lines excluded)
    line_no: int  # physical line where the row starts (SQL: same as row_no)
    number: str  # the raw value of the number column
    fields: dict[str, str]  # every column (including the number column), for {placeholders}


@runtime_checkable
class Source(Protocol):
    """A stream of recipient rows whose columns are known before the first row is read.

    Iterate once; ``close()`` releases the file or connection (it is also called when the
    iteration ends, and by ``with``).
    """

    description: str  # for humans and the ``campaigns.source`` column; never holds a password
    columns: tuple[str, ...]  # header names / result keys, in order

    @property
    def identity(self) -> str:
        """A stable fingerprint input: equal for the same recipients, different otherwise."""
        ...

    def __iter__(self) -> Iterator[SourceRow]: ...

    def records(self) -> Iterator[Record]:
        """The same rows as ``__iter__``, as plain :data:`Record` tuples (iterate once, either)."""
        ...

    def close(self) -> None: ...


def source_rows(columns: tuple[str, ...], records: Iterable[Record]) -> Iterator[SourceRow]:
    """``records`` as :class:`SourceRow` objects, their values keyed by column name."""
    return (
        SourceRow(row_no, line_no, number, dict(zip(columns, values, strict=True)))
        for row_no, line_no, number, values in records
    )


class StreamOnce:
    """The iterate-once part every source shares: ``records()`` (and ``__iter__`` over it) start
    the subclass's ``_rows()`` generator once; ``_stop_rows()`` closes it early, which runs its
    ``finally`` (where the subclass releases its file or cursor)."""

    description: str
    columns: tuple[str, ...]

    def __init__(self) -> None:
        self._started = False
        self._rows_gen: Generator[Record, None, None] | None = None

    def _rows(self) -> Generator[Record, None, None]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[SourceRow]:
        return source_rows(self.columns, self.records())

    def records(self) -> Iterator[Record]:
        """Every data row as a plain tuple; ``__iter__`` wraps these in :class:`SourceRow`."""
        if self._started:
            raise RuntimeError(f"{self.description}: a source can be iterated only once")
        self._started = True
        self._rows_gen = self._rows()
        return self._rows_gen

    def _stop_rows(self) -> None:
        if self._rows_gen is not None:
            gen, self._rows_gen = self._rows_gen, None
            gen.close()
