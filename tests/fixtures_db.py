"""Results-database fixtures: a clean, real database per test on SQLite, PostgreSQL and MariaDB.

``db_url`` is parametrised over the three engines. PostgreSQL gets a fresh schema per test (put
first on the ``search_path`` through the URL), MariaDB a fresh database, SQLite a file in tmp_path;
all are dropped afterwards. An unreachable server skips its tests, unless ``CI`` is set: then it
fails, so a broken CI database can never pass silently.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from batch_sender.store import Store

__all__ = ["MARIADB_URL", "POSTGRES_URL", "db_url", "fresh_db_url", "require", "store"]

POSTGRES_URL = os.environ.get(
    "BATCH_SENDER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "BATCH_SENDER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"
)


@functools.cache
def _unreachable(url: str) -> str | None:
    """Why the server at ``url`` cannot be used (None if it can); asked once per session."""
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not reachable" for the skip message
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def require(kind: str, url: str) -> None:
    """Skip (or, under CI, fail) the test when the server at ``url`` cannot be reached."""
    reason = _unreachable(url)
    if reason is None:
        return
    message = f"{kind} not reachable at {make_url(url).render_as_string()}: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _postgres_url() -> Iterator[str]:
    require("PostgreSQL", POSTGRES_URL)
    schema = f"bs_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def _mariadb_url() -> Iterator[str]:
    require("MariaDB", MARIADB_URL)
    database = f"bs_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(MARIADB_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4"))
    try:
        yield make_url(MARIADB_URL).set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database}"))
        admin.dispose()


def _sqlite_url(directory: Path) -> Iterator[str]:
    yield f"sqlite:///{directory / 'results.db'}"


def fresh_db_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A generator yielding the URL of a new empty database of ``kind``, dropped when closed."""
    if kind == "postgresql":
        return _postgres_url()
    if kind == "mariadb":
        return _mariadb_url()
    return _sqlite_url(tmp_path)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty results database, once per supported engine."""
    yield from fresh_db_url(request.param, tmp_path)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A ``Store`` opened (and migrated) on ``db_url``."""
    opened = Store.open(db_url)
    try:
        yield opened
    finally:
        opened.close()
