"""Engines tuned per database, and the one place SQLAlchemy errors become ``StoreError``.

SQLite gets WAL, ``synchronous=NORMAL``, a busy timeout and foreign keys, and takes transaction
control away from the ``sqlite3`` module so that a write transaction can start with
``BEGIN IMMEDIATE`` (two processes on one file then queue for the write lock instead of failing
half-way). MariaDB/MySQL run at READ COMMITTED, as PostgreSQL does, so queue claims take no gap
locks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from batch_sender.errors import StoreError

__all__ = [
    "begin_write",
    "create",
    "driver_hint",
    "hold_writer",
    "masked",
    "release_writer",
    "store_errors",
    "with_driver",
]

SQLITE_BUSY_TIMEOUT_MS = 60_000  # how long a writer waits for another process's transaction
#: page cache (KiB) of a bulk insert: 1,000,000 staged rows went from 5.7 to 4.1 s of inserting
#: (raw sqlite3) with it, when the number index (23 MB) no longer thrashes the 2 MB default
SQLITE_BULK_CACHE_KIB = 16_000
_BEGIN_OPTION = "batch_sender_sqlite_begin"
#: a URL without a driver (``mysql://``) → the driver batch-sender's extras install
DEFAULT_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
#: backend → the extra that installs its driver (``pip install 'batch-sender[mysql]'``)
EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def masked(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def with_driver(url: str | URL) -> URL:
    """``url`` parsed, with the driver our extras install when it names none.

    SQLAlchemy reads ``mysql://`` and ``mariadb://`` as the mysqlclient driver (and
    ``postgresql://`` as psycopg2 before 2.1); ``batch-sender[mysql]`` installs PyMySQL and
    ``batch-sender[postgres]`` psycopg 3, so a URL without ``+driver`` means those.
    """
    parsed = make_url(url)
    if "+" not in parsed.drivername and parsed.drivername in DEFAULT_DRIVERS:
        parsed = parsed.set(drivername=f"{parsed.drivername}+{DEFAULT_DRIVERS[parsed.drivername]}")
    return parsed


def driver_hint(url: str | URL) -> str:
    """What to install for ``url``'s driver: our extra for the databases we test."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "a SQLAlchemy driver for it"
    extra = EXTRAS.get(parsed.get_backend_name())
    if extra is None:
        return f"a SQLAlchemy driver for {parsed.drivername!r}"
    return f"batch-sender[{extra}] (pip install 'batch-sender[{extra}]')"


def create(url: str) -> Engine:
    """A SQLAlchemy engine for ``url`` with the per-database settings described above."""
    parsed = with_driver(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if backend in ("mysql", "mariadb"):
        return create_engine(parsed, isolation_level="READ COMMITTED", pool_pre_ping=True)
    return create_engine(parsed, pool_pre_ping=True)


@contextmanager
def begin_write(
    engine: Engine, *, bulk: bool = False, durable: bool = False
) -> Iterator[Connection]:
    """A transaction that intends to write: ``BEGIN IMMEDIATE`` on SQLite, plain elsewhere.

    ``bulk=True`` (SQLite) is for a writer inserting many rows whose every reference is to a row
    it created itself: no per-row foreign key lookups, and a page cache of
    :data:`SQLITE_BULK_CACHE_KIB` (random numbers go into the number index all over it; the
    default 2 MB cache then rereads and rewrites the same pages again and again). Both hold for
    this transaction only: pragmas cannot change inside one, so they are set around it on the raw
    connection, and restored before it goes back to the pool.

    ``durable=True`` (SQLite) commits with ``synchronous = FULL``: the commit survives a power
    cut, not only a crash of the process (WAL at NORMAL may lose the last commits then). For
    what is acknowledged to someone who will not send it again (a delivery receipt).
    """
    with engine.connect() as conn:
        conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        raw: Any = None
        cache_size = 0
        sqlite = engine.dialect.name == "sqlite"
        if sqlite and (bulk or durable):
            raw = conn.connection.dbapi_connection
        if bulk and sqlite:
            cache_size = int(raw.execute("PRAGMA cache_size").fetchone()[0])
            raw.execute("PRAGMA foreign_keys = OFF")
            raw.execute(f"PRAGMA cache_size = -{SQLITE_BULK_CACHE_KIB}")
        if durable and sqlite:
            raw.execute("PRAGMA synchronous = FULL")
        try:
            with conn.begin():
                yield conn
        finally:
            if raw is not None:
                try:
                    if bulk:
                        raw.execute("PRAGMA foreign_keys = ON")
                        raw.execute(f"PRAGMA cache_size = {cache_size}")
                    if durable:
                        raw.execute("PRAGMA synchronous = NORMAL")
                except sqlite3.Error:  # never hand an unchecked connection back to the pool
                    conn.invalidate()


def hold_writer(engine: Engine, *, durable: bool = False) -> Connection:
    """A connection kept by one writer thread for many transactions (``with conn.begin():``).

    What :func:`begin_write` sets per transaction is set once: ``BEGIN IMMEDIATE`` and, with
    ``durable``, ``synchronous = FULL`` on SQLite. Taking it from the pool per transaction cost
    a round trip more each time on PostgreSQL and MariaDB (the pool's pre-ping). Give it back with
    :func:`release_writer`; after a failure, release it and hold a new one (a server restart
    leaves it dead).
    """
    conn = engine.connect()
    try:
        conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        if durable and engine.dialect.name == "sqlite":
            conn.connection.dbapi_connection.execute("PRAGMA synchronous = FULL")  # type: ignore[union-attr]
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    return conn


def release_writer(conn: Connection, *, broken: bool = False) -> None:
    """Back to the pool as the pool hands them out (or thrown away, when ``broken``)."""
    try:
        if broken:
            conn.invalidate()
        elif conn.dialect.name == "sqlite" and not conn.invalidated:
            try:
                conn.connection.dbapi_connection.execute("PRAGMA synchronous = NORMAL")  # type: ignore[union-attr]
            except sqlite3.Error:
                conn.invalidate()
    finally:
        conn.close()


@contextmanager
def store_errors(action: str, url: str | URL) -> Iterator[None]:
    """Turn any SQLAlchemy or driver error raised inside into a ``StoreError`` about ``action``."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(f"{action} failed on {masked(url)}: {describe(exc, url)}") from exc
    except sqlite3.Error as exc:  # raised directly by the driver outside SQLAlchemy's wrapping
        raise StoreError(f"{action} failed on {masked(url)}: {describe(exc, url)}") from exc


def describe(exc: BaseException, url: str | URL) -> str:
    """The driver's own message (not SQLAlchemy's statement dump), without the password."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    if password:
        message = message.replace(str(password), "***")
    return message


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings; transactions are begun explicitly by ``_sqlite_begin``."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Emit BEGIN ourselves: deferred for readers, IMMEDIATE when ``begin_write`` asked."""
    conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))
