"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from gateway.settings import StoreSettings
from gateway.store.db import create_engine, migrate, open_store
from gateway.store.models import Base


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, Base.metadata))


async def test_migrated_schema_matches_the_models(store_settings: StoreSettings) -> None:
    engine, _sessions = await open_store(store_settings)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []


async def test_stage_changes_already_pushed_or_without_a_case_are_marked_tracked(
    store_settings: StoreSettings,
) -> None:
    """Migration 0015 leaves unmarked only the stage changes the sweeper must still push."""
    engine = create_engine(store_settings)
    at = datetime(2026, 11, 26, 10, tzinfo=UTC)
    try:
        await migrate(engine, "0014")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO cases (case_no, item_code, application_id, received_at)"
                    " VALUES ('C1', 'item', 'with-case', :at)"
                ),
                {"at": at},
            )
            for seq, (application, event_id) in enumerate(
                [("with-case", "pushed"), ("with-case", "unpushed"), ("no-case", "nothing")], 1
            ):
                await conn.execute(
                    text(
                        "INSERT INTO stage_changes (application_id, seq, stage, handler,"
                        " occurred_at, event_id, created_at)"
                        " VALUES (:a, :seq, 'accepted', 'h', :at, :e, :at)"
                    ),
                    {"a": application, "seq": seq, "at": at, "e": event_id},
                )
            await conn.execute(
                text(
                    "INSERT INTO deliveries (worker, event_id, application_id, event_type, status,"
                    " attempts, updated_at) VALUES ('ywtb-status', 'pushed', 'with-case',"
                    " 'x', 'delivered', 1, :at)"
                ),
                {"at": at},
            )
        await migrate(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT event_id, push_tracked_at IS NULL FROM stage_changes ORDER BY seq")
            )
            unmarked = {event_id: bool(null) for event_id, null in rows}
    finally:
        await engine.dispose()
    assert unmarked == {"pushed": False, "unpushed": True, "nothing": False}
