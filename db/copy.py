"""Copying one LeadBot database into another: how a team moves from SQLite to PostgreSQL.

The target is migrated to the same revision first and must be empty; rows go table by table in the
order of their references, in batches, each table in one transaction; the target's id sequences then
follow the copied ids. The source is only read.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from db.engine import Database
from db.migrate import upgrade
from db.models import Base
from db.sql import follow_explicit_ids

BATCH = 5000


class TargetNotEmpty(Exception):
    """The target database already holds LeadBot data; nothing was copied."""


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    rows: int


async def copy_database(source: Database, target: Database) -> list[Copied]:
    await upgrade(source.write_engine)
    await upgrade(target.write_engine)
    tables = Base.metadata.sorted_tables
    async with target.reader() as session:
        for table in tables:
            if await session.scalar(select(func.count()).select_from(table)):
                raise TargetNotEmpty(f"the target database already has rows in {table.name}")
    copied = []
    for table in tables:
        count = 0
        async with source.reader() as reading, target.writer() as writing:
            result = await reading.stream(select(table).order_by(*table.primary_key.columns))
            async for batch in result.mappings().partitions(BATCH):
                await writing.execute(table.insert(), [dict(row) for row in batch])
                count += len(batch)
            await writing.commit()
        copied.append(Copied(table.name, count))
    async with target.writer() as writing:
        await follow_explicit_ids(writing, [t for t in tables if "id" in t.columns])
        await writing.commit()
    return copied
