"""Migrations: every revision goes up, down and up again ("stairway"), and the result is the models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import Database, open_database
from db.migrate import alembic_config, downgrade, upgrade
from db.models import Base
from db.uow import UnitOfWorkFactory
from tests.analytics_data import simulate, store
from tests.conftest import Team
from tests.test_lead_facts import run_mixed_sequence, stored_and_recomputed


def revisions() -> list[Script]:
    """From the first revision to the head."""
    script = ScriptDirectory.from_config(alembic_config())
    return list(reversed(list(script.walk_revisions("base", "heads"))))


@pytest.fixture
async def fresh_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    database = open_database(f"sqlite+aiosqlite:///{tmp_path / 'stairway.db'}")
    yield database.write_engine
    await database.dispose()


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": False})
    return compare_metadata(context, Base.metadata)


async def current_tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return await connection.run_sync(_tables)


def test_there_is_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert revisions(), "no migrations found"


async def test_stairway_every_revision_up_down_up(fresh_engine: AsyncEngine) -> None:
    for revision in revisions():
        await upgrade(fresh_engine, revision.revision)
        after_up = await current_tables(fresh_engine)
        await downgrade(fresh_engine, "-1")
        await upgrade(fresh_engine, revision.revision)
        assert await current_tables(fresh_engine) == after_up, revision.revision
    await downgrade(fresh_engine, "base")
    assert await current_tables(fresh_engine) <= {"alembic_version"}, "downgrade to base must drop every table"


async def test_migrated_schema_matches_the_models(fresh_engine: AsyncEngine) -> None:
    await upgrade(fresh_engine)
    async with fresh_engine.connect() as connection:
        differences = await connection.run_sync(_diff)
    assert differences == []
    assert set(Base.metadata.tables) <= await current_tables(fresh_engine)


async def test_the_comparison_notices_a_drift(fresh_engine: AsyncEngine) -> None:
    """Guards the test above against comparing nothing: a schema off by one index and one column is caught."""
    await upgrade(fresh_engine)
    async with fresh_engine.begin() as connection:
        await connection.exec_driver_sql("DROP INDEX ix_comments_lead")
        await connection.exec_driver_sql("ALTER TABLE users ADD COLUMN nickname VARCHAR(20)")
    async with fresh_engine.connect() as connection:
        differences = await connection.run_sync(_diff)
    kinds = {(d[0], getattr(d[1], "name", None)) for d in differences if isinstance(d, tuple)}
    assert ("add_index", "ix_comments_lead") in kinds
    assert any(d[0] == "remove_column" and d[3].name == "nickname" for d in differences if isinstance(d, tuple))


async def test_the_backfill_of_0008_gives_what_the_repositories_keep(
    database: Database, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    """Migration 0008 fills the report facts of existing leads from their rows (set-based SQL) exactly as
    the repositories keep them change by change, and as db.lead_facts recomputes them; on SQLite and on
    PostgreSQL (whichever the suite runs on)."""
    await run_mixed_sequence(uow_factory, team)
    # Rows written around the repositories, with a richer history (reassignments, reopenings, comments
    # by others), their facts recomputed by db.lead_facts.
    await store(
        uow_factory,
        simulate(seed=8, count=150, sellers=[team.seller.id, team.seller2.id], heads=[team.rop.id, team.admin.id]),
        created_by=team.rop.id,
    )
    kept, recomputed = await stored_and_recomputed(uow_factory)
    assert kept == recomputed and len(kept) > 150
    assert any(first is None for _, first, _ in kept.values()) and any(ever for _, _, ever in kept.values())

    await downgrade(database.write_engine, "0007")
    await upgrade(database.write_engine)
    await database.dispose()  # no connection keeps statements prepared against the old columns
    backfilled, _ = await stored_and_recomputed(uow_factory)
    assert backfilled == kept
