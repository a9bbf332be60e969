"""SQL that differs between the databases the core supports, chosen by the dialect in use.

Everything else in the core is written once in portable SQLAlchemy; only what has no portable spelling
lives here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Insert, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def insert_or_skip(
    session: AsyncSession, table: Table, conflict: list[Any] | None, where: ColumnElement[bool] | None = None
) -> Insert:
    """``INSERT … ON CONFLICT (conflict) [WHERE where] DO NOTHING`` for the session's database.

    ``where`` names a partial unique index (the live phone), which both SQLite and PostgreSQL need
    spelled out to pick the index. ``conflict`` None: any unique index that conflicts (a table with
    more than one, such as the integration links).
    """
    module = postgresql if dialect_of(session) == "postgresql" else sqlite
    stmt = module.insert(table)
    return stmt.on_conflict_do_nothing(index_elements=conflict, index_where=where)


async def follow_explicit_ids(session: AsyncSession, tables: list[Table]) -> None:
    """After rows were written with explicit ids, make the next generated id follow them.

    SQLite's rowid always does; a PostgreSQL sequence does not know about ids it did not hand out (a
    copy from another database, test fixtures with the reference's ids).
    """
    if dialect_of(session) != "postgresql":
        return
    for table in tables:
        await session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f'COALESCE((SELECT max(id) FROM "{table.name}"), 0) + 1, false)'
            )
        )
