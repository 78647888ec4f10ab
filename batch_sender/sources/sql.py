"""Recipients from a SQL query on any SQLAlchemy URL, streamed with a server-side cursor.

This module is the one boundary where the source database's SQLAlchemy/DBAPI errors become
``InputError``: one line with the database's own message, the URL shown with its password masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, make_url

from batch_sender.errors import InputError
from batch_sender.sources.base import Record, StreamOnce

__all__ = ["SQL_BATCH_ROWS", "SqlSource", "open_sql"]

SQL_BATCH_ROWS: Final = 1000  # rows fetched from the server per round trip
_DESCRIPTION_QUERY_CHARS: Final = 60  # of the query shown in ``description``
_T = TypeVar("_T")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")  # for URLs SQLAlchemy cannot parse


class SqlSource(StreamOnce):
    """A recipients query, already executed so its columns are known; iterate once."""

    def __init__(
        self, url: str, query: str, *, to_column: str = "to", allow_empty: bool = False
    ) -> None:
        parsed = _parse_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        self.query = query
        self.to_column = to_column
        self.description = f"SQL: {_shorten(query)} ({self.url})"
        self._password = parsed.password
        super().__init__()
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._result: CursorResult[Any] | None = None
        try:
            self._engine = self._create_engine(parsed)
            self._conn = self._guard("cannot connect", self._engine.connect)
            # The operator's SQL goes to the database as written, as it ran in their SQL
            # console: exec_driver_sql binds no ":name", and no_parameters keeps the DBAPI
            # from reading "%" (as in LIKE '27%') as a placeholder.
            conn = self._conn.execution_options(
                stream_results=True, yield_per=SQL_BATCH_ROWS, no_parameters=True
            )
            self._result = self._guard("query failed", lambda: conn.exec_driver_sql(query))
            if not self._result.returns_rows:
                raise InputError(f"{self.description}: the query returns no rows (not a SELECT?)")
            self.columns = self._check_columns(tuple(self._result.keys()))
            self._to_index = self.columns.index(to_column)
            self._first = self._guard("query failed", self._fetch)
            if not self._first and not allow_empty:
                raise InputError(f"{self.description}: no recipients (the query returned no rows)")
        except BaseException:
            self._release()
            raise

    @property
    def identity(self) -> str:
        """The query text and the masked URL: the same query on the same database is the same
        campaign, even though its rows may change between runs.
        """
        return f"sql url={self.url} to={self.to_column!r}\n{self.query.strip()}"

    def close(self) -> None:
        """Release the cursor, the connection and the engine; safe to call twice."""
        self._stop_rows()
        self._release()

    def _release(self) -> None:
        result, self._result = self._result, None
        conn, self._conn = self._conn, None
        engine, self._engine = self._engine, None
        try:
            if result is not None:
                result.close()
            if conn is not None:
                conn.close()
        except sa.exc.SQLAlchemyError:
            pass  # closing after a failure: the connection is discarded either way
        finally:
            if engine is not None:
                engine.dispose()

    def __enter__(self) -> SqlSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SqlSource {self.description!r} columns={self.columns!r}>"

    # -- reading -----------------------------------------------------------------------------

    def _rows(self) -> Generator[Record, None, None]:
        index = self._to_index
        row_no = 0
        try:
            batch = self._first
            self._first = []
            while batch:
                for values in batch:
                    row_no += 1
                    row = [v if v.__class__ is str else _text(v) for v in values]
                    yield row_no, row_no, row[index], row
                batch = self._guard("reading the result failed", self._fetch)
        finally:
            self._release()

    def _fetch(self) -> Sequence[Sequence[Any]]:
        assert self._result is not None
        return self._result.fetchmany(SQL_BATCH_ROWS)

    def _check_columns(self, columns: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for name in columns:
            if name in seen:
                raise InputError(
                    f"{self.description}: the query returns two columns named {name!r} (use AS)"
                )
            seen.add(name)
        if self.to_column not in seen:
            raise InputError(
                f"{self.description}: no {self.to_column!r} column for the numbers;"
                f" the query returns: {', '.join(columns)}"
            )
        return columns

    def _create_engine(self, parsed: URL) -> Engine:
        try:
            return sa.create_engine(parsed)
        except sa.exc.NoSuchModuleError:
            raise InputError(f"{self.url}: unknown database driver {parsed.drivername!r}") from None
        except ImportError as exc:
            from batch_sender.store import engine as engines

            raise InputError(
                f"{self.url}: the driver for {parsed.drivername!r} is not installed ({exc.name});"
                f" install {engines.driver_hint(parsed)}"
            ) from None
        except (sa.exc.ArgumentError, TypeError, ValueError) as exc:
            raise InputError(f"{self.url}: {self._scrub(str(exc))}") from None

    def _guard(self, what: str, call: Callable[[], _T]) -> _T:
        """Run ``call``; a database error becomes one line of InputError without the password."""
        try:
            return call()
        except sa.exc.DBAPIError as exc:
            raise InputError(f"{self.description}: {what}: {self._db_message(exc)}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise InputError(f"{self.description}: {what}: {self._scrub(str(exc))}") from None

    def _db_message(self, exc: sa.exc.DBAPIError) -> str:
        """The database's own words: the first non-empty line of the driver's message."""
        args = exc.orig.args if exc.orig is not None else ()
        if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
            text = f"{args[1]} (error {args[0]})"  # MySQL drivers: (code, message)
        else:
            text = str(exc.orig) if exc.orig is not None else str(exc)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return self._scrub(lines[0] if lines else type(exc.orig).__name__)

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return _URL_PASSWORD.sub(r"\1***@", text)


def open_sql(
    url: str, query: str, *, to_column: str = "to", allow_empty: bool = False
) -> SqlSource:
    """Run a recipients query now (bad URL, driver, connection or SQL fail here) and stream it.

    Values become text (``None`` → ``""``); raises ``InputError`` with the database's message
    and the password masked, and (unless ``allow_empty``) when the query returns no rows.
    """
    return SqlSource(url, query, to_column=to_column, allow_empty=allow_empty)


def _parse_url(url: str) -> URL:
    try:
        from batch_sender.store import engine as engines  # the drivers our extras install

        return engines.with_driver(make_url(url))
    except (sa.exc.ArgumentError, ValueError):
        shown = _mask_unparsed(url)
        raise InputError(f"not a database URL: {shown!r} (expected dialect+driver://...)") from None


def _mask_unparsed(url: str) -> str:
    """Hide what follows the user name in a URL too broken for SQLAlchemy to parse."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    start = head.find("//")
    colon = head.find(":", start + 2 if start >= 0 else 0)
    return (head[: colon + 1] + "***" if colon >= 0 else head) + at + tail


def _shorten(query: str) -> str:
    flat = " ".join(query.split())
    if len(flat) <= _DESCRIPTION_QUERY_CHARS:
        return flat
    return flat[: _DESCRIPTION_QUERY_CHARS - 1] + "…"


def _text(value: object) -> str:
    """A database value as template text: NULL is empty, bytes are UTF-8."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
