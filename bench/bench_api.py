"""Benchmark of the HTTP API on 1,000,000 leads, beside the same queries in raw sqlite3.

    python -m bench.bench_api [--leads 1000000] [--requests 300] [--rebuild]

Builds (once; reused while it has the right size) ``bench/bench_api.db``: the schema from the real
migrations, then the rows with raw ``sqlite3.executemany`` in one transaction. Then measures, through
the ASGI app in-process (httpx ``ASGITransport``, a real bearer token, the production unit of work):

- ``GET /api/leads/`` first page, and a deep page (page 40,000 of size 20 = OFFSET 799,980);
- ``GET /api/leads/{id}`` for random ids (with comments and history);

and the same queries in raw sqlite3 in the same run, and prints requests per second, p99 and the ratios.
Not a test: the figures go into the README.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from api.app import create_app
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
    users = [(1, ADMIN_TG, "Админ", None, "admin")] + [
        (1 + n, ADMIN_TG + n, "Продажник", f"№{n}", "seller") for n in range(1, SELLERS + 1)
    ]
    conn.executemany(
        "INSERT INTO users (id, telegram_id, first_name, last_name, role, is_active, created_at) "
        "VALUES (?, ?, ?, ?, ?, 1, ?)",
        [(*u, now.strftime(_FMT)) for u in users],
    )
    columns = [row[1] for row in conn.execute("PRAGMA table_info(leads)")]
    rng = random.Random(42)
    start = now - timedelta(days=730)
    step = timedelta(days=730) / leads

    def rows() -> object:
        for n in range(1, leads + 1):
            created = (start + step * n).strftime(_FMT)
            name = f"Клиент {n}"
            values = {
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
            yield tuple(values.get(column) for column in columns)

    placeholders = ", ".join("?" for _ in columns)
    conn.executemany(f"INSERT INTO leads ({', '.join(columns)}) VALUES ({placeholders})", rows())  # type: ignore[arg-type]
    conn.execute("COMMIT")
    conn.close()
    print(f"built {leads:,} leads in {time.perf_counter() - started:.1f} s -> {path}")


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


async def run(leads: int, requests: int, deep_page: int) -> None:
    settings = Settings.model_validate({"database": {"url": _url(DB_PATH)}})
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
    raw = sqlite3.connect(DB_PATH)
    size = 20

    def raw_list(page: int) -> None:
        raw.execute("SELECT count(*) FROM leads WHERE deleted_at IS NULL").fetchone()
        raw.execute(
            "SELECT * FROM leads WHERE deleted_at IS NULL ORDER BY id DESC LIMIT ? OFFSET ?",
            (size, (page - 1) * size),
        ).fetchall()

    def raw_detail(lead_id: int) -> None:
        raw.execute(
            "SELECT * FROM leads LEFT JOIN users ON users.id = leads.assigned_to_id "
            "WHERE leads.id = ? AND leads.deleted_at IS NULL",
            (lead_id,),
        ).fetchone()
        raw.execute("SELECT * FROM comments WHERE lead_id = ? ORDER BY id", (lead_id,)).fetchall()
        raw.execute("SELECT * FROM lead_history WHERE lead_id = ? ORDER BY id", (lead_id,)).fetchall()

    results: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:

        async def api_get(url: str) -> None:
            response = await client.get(url, headers=headers)
            assert response.status_code == 200, response.text

        async def wrap(func: Callable[[], None]) -> None:
            func()

        async def forget_then(call: Awaitable[None]) -> None:
            # The worst case: no remembered total or anchor (as right after any lead changed).
            leads_repository._LISTINGS.clear()
            await call

        cases: list[tuple[str, Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]] = [
            (
                "GET /api/leads/ page 1",
                lambda: api_get(f"/api/leads/?page=1&size={size}"),
                lambda: wrap(lambda: raw_list(1)),
            ),
            (
                f"GET /api/leads/ page {deep_page:,}",
                lambda: api_get(f"/api/leads/?page={deep_page}&size={size}"),
                lambda: wrap(lambda: raw_list(deep_page)),
            ),
            (
                f"GET /api/leads/ page {deep_page:,}, nothing remembered",
                lambda: forget_then(api_get(f"/api/leads/?page={deep_page}&size={size}")),
                lambda: wrap(lambda: raw_list(deep_page)),
            ),
            (
                "GET /api/leads/{id}",
                lambda: api_get(f"/api/leads/{rng.randint(1, leads)}"),
                lambda: wrap(lambda: raw_detail(rng.randint(1, leads))),
            ),
        ]
        for name, api_call, raw_call in cases:
            results.append((name, await measure(api_call, requests), await measure(raw_call, requests)))
    raw.close()
    await database.dispose()

    print(f"\n{leads:,} leads, {requests} sequential requests per case, one process\n")
    print("| query | API req/s | API p99 ms | raw sqlite3 req/s | raw p99 ms | API/raw time |")
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
    args = parser.parse_args()
    if args.rebuild or _count(DB_PATH) != args.leads:
        build(DB_PATH, args.leads)
    deep_page = max(1, min(40_000, (args.leads * 9 // 10) // 20))
    asyncio.run(run(args.leads, args.requests, deep_page))


if __name__ == "__main__":
    main()
