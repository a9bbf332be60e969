"""PostgreSQL for the benchmarks: the schema from the real migrations, rows loaded with COPY.

The benchmarks take ``--database-url``; a ``postgresql+asyncpg://`` URL names a database the benchmark
owns entirely (``createdb -h 127.0.0.1 -U postgres bench``): building drops its ``public`` schema and
makes it again with ``db.migrate.upgrade``, so never point it at a database that holds anything else.

Rows go in with asyncpg's ``copy_records_to_table`` (the binary COPY protocol), with the migrations'
indexes in place, then the id sequences are moved past the ids written and the tables analysed. A built
database is recognised by a comment on its ``leads`` table (what built it, for which migrations and how
many leads), so a second run reuses it as the SQLite benchmarks reuse their cached file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
from sqlalchemy import make_url

from db.engine import is_sqlite, open_database
from db.migrate import MIGRATIONS_DIR, upgrade

COPY_BATCH = 50_000  # rows per COPY: memory stays flat however many leads


def is_server(url: str) -> bool:
    return not is_sqlite(url)


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as asyncpg's own DSN (``postgresql://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def schema_key(builder: str) -> str:
    """What a built database must match to be reused: the builder's name and version and the migrations."""
    digest = hashlib.sha256(builder.encode())
    for path in sorted(MIGRATIONS_DIR.rglob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


async def built_marker(url: str) -> str | None:
    """The comment a finished build left on ``leads``, or None (no schema, or not built by a benchmark)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        exists = await connection.fetchval("SELECT to_regclass('public.leads') IS NOT NULL")
        if not exists:
            return None
        value = await connection.fetchval("SELECT obj_description('public.leads'::regclass, 'pg_class')")
        return str(value) if value is not None else None
    finally:
        await connection.close()


async def set_marker(url: str, marker: str | None) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        # COMMENT takes a literal, not a parameter.
        literal = "NULL" if marker is None else "'" + marker.replace("'", "''") + "'"
        await connection.execute(f"COMMENT ON TABLE leads IS {literal}")
    finally:
        await connection.close()


async def recreate_schema(url: str) -> None:
    """An empty ``public`` schema, then the real migrations up to their head."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
        await connection.execute("CREATE SCHEMA public")
    finally:
        await connection.close()
    database = open_database(url)
    try:
        await upgrade(database.write_engine)
    finally:
        await database.dispose()


async def copy_rows(
    connection: asyncpg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """``rows`` into ``table`` by binary COPY, in batches; returns how many."""
    total = 0
    batch: list[Sequence[Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= COPY_BATCH:
            await connection.copy_records_to_table(table, records=batch, columns=list(columns))
            total += len(batch)
            batch = []
    if batch:
        await connection.copy_records_to_table(table, records=batch, columns=list(columns))
        total += len(batch)
    return total


async def finish_load(connection: asyncpg.Connection, tables: Sequence[str]) -> None:
    """Sequences past the ids written explicitly; fresh planner statistics for every table."""
    for table in tables:
        await connection.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM {table}),"
            " false)"
        )
    await connection.execute("VACUUM ANALYZE")
