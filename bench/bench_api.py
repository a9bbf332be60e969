"""Benchmark of the HTTP API on 1,000,000 leads, beside the same queries in the raw driver.

    python -m bench.bench_api [--leads 1000000] [--requests 300] [--rebuild]
    python -m bench.bench_api --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench

Builds (once; reused while it has the right size) the database: by default the SQLite file
``bench/bench_api.db``, the schema from the real migrations, then the rows with raw
``sqlite3.executemany`` in one transaction; with ``--database-url postgresql+asyncpg://…`` a PostgreSQL
database the benchmark owns (its ``public`` schema is dropped and made again by the real migrations, the
rows loaded with asyncpg's binary COPY; see ``bench/_server.py``). Then measures, through the ASGI app
in-process (httpx ``ASGITransport``, a real bearer token, the production unit of work):

- ``GET /api/leads/`` first page, and a deep page (page 40,000 of size 20 = OFFSET 799,980);
- ``GET /api/leads/{id}`` for random ids (with comments and history);

and the same queries in the raw driver in the same run — sqlite3 on one connection, or asyncpg with a
pool and prepared statements (asyncpg prepares each statement once per connection and reuses it) — and
prints requests per second, p99 and the ratios. Not a test: the figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import make_url

from api.app import create_app
from bench._server import (
    asyncpg_dsn,
    built_marker,
    copy_rows,
    finish_load,
    is_server,
    recreate_schema,
    schema_key,
    set_marker,
)
from bot.config import Settings
from db.engine import open_database
from db.migrate import upgrade
from db.repositories import leads as leads_repository
from db.validation import fold_for_search

HERE = Path(__file__).resolve().parent
DB_PATH = HERE / "bench_api.db"
SOURCES = ["Instagram", "Facebook", "Google Ads", "Рекомендация", "Холодный звонок", "Сайт"]
STATUSES = ["новый", "в работе", "закрыт", "отказ"]
SELLERS = 10
ADMIN_TG = 800_000_001
_FMT = "%Y-%m-%d %H:%M:%S.%f"
BUILDER = "bench_api 1"  # bump when the rows below change, so a built PostgreSQL database is rebuilt
LEAD_COLUMNS = (
    "id",
    "client_name",
    "search_name",
    "phone_number",
    "status",
    "source",
    "budget",
    "notes",
    "assigned_to_id",
    "created_by_id",
    "created_at",
    "updated_at",
    "reminder_count",
)
USER_COLUMNS = ("id", "telegram_id", "first_name", "last_name", "role", "is_active", "created_at")


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _migrate(path: Path) -> None:
    database = open_database(_url(path))
    try:
        await upgrade(database.write_engine)
    finally:
        await database.dispose()


def _count(path: Path) -> int:
    if not path.exists():
        return -1
    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM leads").fetchone()[0])
    except sqlite3.Error:
        return -1


def _users(now: datetime) -> list[tuple[Any, ...]]:
    users = [(1, ADMIN_TG, "Админ", None, "admin")] + [
        (1 + n, ADMIN_TG + n, "Продажник", f"№{n}", "seller") for n in range(1, SELLERS + 1)
    ]
    return [(*u, True, now) for u in users]


def _leads(leads: int, now: datetime) -> Iterator[dict[str, Any]]:
    """The leads, the same on both databases: ids ascending with ``created_at`` over two years."""
    rng = random.Random(42)
    start = now - timedelta(days=730)
    step = timedelta(days=730) / leads
    for n in range(1, leads + 1):
        created = start + step * n
        name = f"Клиент {n}"
        yield {
            "id": n,
            "client_name": name,
            "search_name": fold_for_search(name),
            "phone_number": f"+99890{n:07d}",
            "status": STATUSES[n % 4],
            "source": SOURCES[n % 6],
            "budget": float(rng.randrange(10, 500) * 1000),
            "notes": None,
            "assigned_to_id": 2 + n % SELLERS if n % 10 else None,
            "created_by_id": 1,
            "created_at": created,
            "updated_at": created,
            "reminder_count": 0,
        }


def build(path: Path, leads: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    asyncio.run(_migrate(path))
    started = time.perf_counter()
    now = datetime.now(UTC).replace(tzinfo=None)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO users ({', '.join(USER_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(*u[:-1], u[-1].strftime(_FMT)) for u in _users(now)],
    )
    columns = [row[1] for row in conn.execute("PRAGMA table_info(leads)")]

    def rows() -> Iterator[tuple[object, ...]]:
        for values in _leads(leads, now):
            values["created_at"] = values["updated_at"] = values["created_at"].strftime(_FMT)
            yield tuple(values.get(column) for column in columns)

    placeholders = ", ".join("?" for _ in columns)
    conn.executemany(f"INSERT INTO leads ({', '.join(columns)}) VALUES ({placeholders})", rows())
    conn.execute("COMMIT")
    conn.close()
    print(f"built {leads:,} leads in {time.perf_counter() - started:.1f} s -> {path}")


def _marker(leads: int) -> str:
    return f"{BUILDER} {schema_key(BUILDER)} {leads}"


async def build_server(url: str, leads: int) -> None:
    """The same rows in PostgreSQL: the real migrations on an empty schema, then binary COPY."""
    started = time.perf_counter()
    await recreate_schema(url)
    now = datetime.now(UTC).replace(tzinfo=None)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await copy_rows(conn, "users", USER_COLUMNS, _users(now))
        rows = (tuple(values[column] for column in LEAD_COLUMNS) for values in _leads(leads, now))
        await copy_rows(conn, "leads", LEAD_COLUMNS, rows)
        loaded = time.perf_counter() - started
        await finish_load(conn, ["users", "leads"])
    finally:
        await conn.close()
    await set_marker(url, _marker(leads))
    print(
        f"built {leads:,} leads in {time.perf_counter() - started:.1f} s"
        f" ({loaded:.1f} s to load, the rest VACUUM ANALYZE) -> {make_safe(url)}"
    )


def make_safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def measure(call: Callable[[], Awaitable[object]], requests: int) -> tuple[float, float]:
    """(requests per second, p99 in ms) of ``requests`` sequential calls after a short warm-up."""
    for _ in range(min(10, requests)):
        await call()
    latencies = []
    started = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]
    return requests / total, p99 * 1000


class RawSqlite:
    """The API's queries in raw sqlite3, on one connection."""

    name = "raw sqlite3"

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path)

    async def list(self, page: int, size: int) -> None:
        self.conn.execute("SELECT count(*) FROM leads WHERE deleted_at IS NULL").fetchone()
        self.conn.execute(
            "SELECT * FROM leads WHERE deleted_at IS NULL ORDER BY id DESC LIMIT ? OFFSET ?",
            (size, (page - 1) * size),
        ).fetchall()

    async def detail(self, lead_id: int) -> None:
        self.conn.execute(
            "SELECT * FROM leads LEFT JOIN users ON users.id = leads.assigned_to_id "
            "WHERE leads.id = ? AND leads.deleted_at IS NULL",
            (lead_id,),
        ).fetchone()
        self.conn.execute("SELECT * FROM comments WHERE lead_id = ? ORDER BY id", (lead_id,)).fetchall()
        self.conn.execute("SELECT * FROM lead_history WHERE lead_id = ? ORDER BY id", (lead_id,)).fetchall()

    async def close(self) -> None:
        self.conn.close()


class RawAsyncpg:
    """The same queries in raw asyncpg: a pool, one read-only transaction per request (as the API's read
    unit of work), statements prepared once per connection and reused (asyncpg's statement cache)."""

    name = "raw asyncpg"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, url: str) -> RawAsyncpg:
        return cls(await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4))

    async def list(self, page: int, size: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.fetchval("SELECT count(*) FROM leads WHERE deleted_at IS NULL")
            await conn.fetch(
                "SELECT * FROM leads WHERE deleted_at IS NULL ORDER BY id DESC LIMIT $1 OFFSET $2",
                size,
                (page - 1) * size,
            )

    async def detail(self, lead_id: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.fetchrow(
                "SELECT * FROM leads LEFT JOIN users ON users.id = leads.assigned_to_id "
                "WHERE leads.id = $1 AND leads.deleted_at IS NULL",
                lead_id,
            )
            await conn.fetch("SELECT * FROM comments WHERE lead_id = $1 ORDER BY id", lead_id)
            await conn.fetch("SELECT * FROM lead_history WHERE lead_id = $1 ORDER BY id", lead_id)

    async def close(self) -> None:
        await self.pool.close()


async def run(url: str, leads: int, requests: int, deep_page: int) -> None:
    settings = Settings.model_validate({"database": {"url": url}})
    database = open_database(settings.database.url)
    await upgrade(database.write_engine)
    app = create_app(settings, database)
    async with app.state.uow_factory() as uow:
        admin = await uow.users.by_telegram_id(ADMIN_TG)
        assert admin is not None
        token = await uow.tokens.issue(admin)
        await uow.commit()
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(7)
    raw: RawSqlite | RawAsyncpg = await RawAsyncpg.open(url) if is_server(url) else RawSqlite(DB_PATH)
    size = 20

    results: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:

        async def api_get(url: str) -> None:
            response = await client.get(url, headers=headers)
            assert response.status_code == 200, response.text

        async def forget_then(call: Awaitable[None]) -> None:
            # The worst case: no remembered total or anchor (as right after any lead changed).
            leads_repository._LISTINGS.clear()
            await call

        cases: list[tuple[str, Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]] = [
            (
                "GET /api/leads/ page 1",
                lambda: api_get(f"/api/leads/?page=1&size={size}"),
                lambda: raw.list(1, size),
            ),
            (
                f"GET /api/leads/ page {deep_page:,}",
                lambda: api_get(f"/api/leads/?page={deep_page}&size={size}"),
                lambda: raw.list(deep_page, size),
            ),
            (
                f"GET /api/leads/ page {deep_page:,}, nothing remembered",
                lambda: forget_then(api_get(f"/api/leads/?page={deep_page}&size={size}")),
                lambda: raw.list(deep_page, size),
            ),
            (
                "GET /api/leads/{id}",
                lambda: api_get(f"/api/leads/{rng.randint(1, leads)}"),
                lambda: raw.detail(rng.randint(1, leads)),
            ),
        ]
        for name, api_call, raw_call in cases:
            results.append((name, await measure(api_call, requests), await measure(raw_call, requests)))
    await raw.close()
    await database.dispose()

    print(f"\n{leads:,} leads on {database.dialect}, {requests} sequential requests per case, one process\n")
    print(f"| query | API req/s | API p99 ms | {raw.name} req/s | raw p99 ms | API/raw time |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (api_rps, api_p99), (raw_rps, raw_p99) in results:
        print(
            f"| `{name}` | {api_rps:,.0f} | {api_p99:.1f} | {raw_rps:,.0f} | {raw_p99:.1f} | {raw_rps / api_rps:.1f}× |"
        )
    first, deep, cold = results[0][1], results[1][1], results[2][1]
    print(f"\ndeep page vs first page through the API: {first[0] / deep[0]:.2f}× the time")
    print(f"deep page with nothing remembered vs first page: {first[0] / cold[0]:.2f}× the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--database-url",
        default=_url(DB_PATH),
        help="where the leads live (default: the SQLite file bench/bench_api.db); a postgresql+asyncpg:// URL"
        " names a database the benchmark owns: its public schema is dropped and built again",
    )
    args = parser.parse_args()
    url = args.database_url
    if is_server(url):
        if args.rebuild or asyncio.run(built_marker(url)) != _marker(args.leads):
            asyncio.run(build_server(url, args.leads))
    else:
        path = Path(make_url(url).database or "")
        if path != DB_PATH:
            parser.error("an SQLite --database-url other than the default is not supported; leave it out")
        if args.rebuild or _count(DB_PATH) != args.leads:
            build(DB_PATH, args.leads)
    deep_page = max(1, min(40_000, (args.leads * 9 // 10) // 20))
    asyncio.run(run(url, args.leads, args.requests, deep_page))


if __name__ == "__main__":
    main()
