"""Alembic revisions on real SQLite, PostgreSQL and MariaDB: up, down, up, and model parity."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from batch_sender.store import Store, migrate
from batch_sender.store.engine import begin_write, create
from batch_sender.store.tables import metadata

TABLES = {
    "campaigns",
    "messages",
    "recipients",
    "delivery_events",
    "suppressions",
    "rate_limits",
    "receipt_inbox",
}
VIEWS = {"results", "campaign_summary"}


def schema_objects(engine: Engine) -> tuple[set[str], set[str]]:
    inspector = inspect(engine)
    return set(inspector.get_table_names()) - {"alembic_version"}, set(inspector.get_view_names())


def test_upgrade_downgrade_upgrade_round_trips_on_an_empty_database(db_url: str) -> None:
    engine = create(db_url)
    try:
        with begin_write(engine) as conn:
            migrate.upgrade(conn)
        assert schema_objects(engine) == (TABLES, VIEWS)

        with begin_write(engine) as conn:
            migrate.downgrade(conn, "base")
            assert migrate.current(conn) is None
        assert schema_objects(engine) == (set(), set())

        with begin_write(engine) as conn:
            migrate.upgrade(conn)
            assert migrate.current(conn) == migrate.head()
        assert schema_objects(engine) == (TABLES, VIEWS)
    finally:
        engine.dispose()


def test_the_table_model_matches_the_migrated_schema(db_url: str) -> None:
    with Store.open(db_url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, metadata)

    assert diffs == []


def test_opening_a_store_upgrades_an_empty_database_once(db_url: str) -> None:
    with Store.open(db_url) as first, first.engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
    with Store.open(db_url) as second:  # already at head: nothing to do, nothing breaks
        assert second.campaigns() == []
