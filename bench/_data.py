"""A migrated SQLite database of 1,000,000 leads for the benchmarks, built once and reused.

The schema comes from the real migrations (``db.migrate.upgrade``); the rows are written with raw
``sqlite3.executemany`` in one transaction, which fills a million leads in well under a minute. The
built file is cached in the temp directory under a name derived from the size and the migrations'
content, so a second run (or another benchmark) only copies it; ``fresh_copy`` gives each run its own
file, because the benchmarks write to it.

What is in it:

- a team of 20 (2 admins, 2 heads of sales, 4 sales managers, 10 salespeople, 2 financiers), Telegram
  ids ``TG_BASE + users.id``;
- ``n`` leads, ids ascending with ``created_at`` over the last two years; statuses 25 % новый, 35 % в
  работе, 20 % закрыт, 20 % отказ; the six default sources; 90 % assigned round-robin-ish among the
  salespeople, 10 % unassigned; about 1 % soft-deleted; unique E.164 phones ``+99890xxxxxxx``;
- ``HOT_LEADS`` leads spread over the table (the ones benchmarks open) with 8 comments and 8 history
  rows each, so their cards show "all comments" / "full history" buttons.

``server_database`` puts the same rows into a PostgreSQL database the benchmark owns (the real
migrations on an empty schema, then binary COPY; ``bench/_server.py``), reused while its marker matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench._server import asyncpg_dsn, built_marker, copy_rows, finish_load, recreate_schema, schema_key, set_marker
from db.engine import open_database
from db.enums import LeadStatus, Role
from db.migrate import MIGRATIONS_DIR, upgrade
from db.settings import DEFAULT_SOURCES
from db.validation import fold_for_search

LEADS = 1_000_000
TG_BASE = 700_000_000
HOT_LEADS = 200
NOTES_PER_HOT_LEAD = 8
BUILDER_VERSION = "1"  # bump when the content below changes, so cached files are rebuilt

TEAM: list[tuple[Role, str, str]] = [
    (Role.ADMIN, "Админ", "Первый"),
    (Role.ADMIN, "Админ", "Второй"),
    (Role.ROP, "Роп", "Каримов"),
    (Role.ROP, "Роп", "Юсупова"),
    *[(Role.MOP, "Моп", name) for name in ("Алиев", "Рахимова", "Петров", "Ким")],
    *[
        (Role.SELLER, first, "Продажник")
        for first in ("Азиз", "Бахтиёр", "Гульнора", "Дилшод", "Елена", "Жасур", "Зарина", "Ильхом", "Камола", "Лола")
    ],
    (Role.FINANCE, "Фин", "Одилов"),
    (Role.FINANCE, "Фин", "Сергеева"),
]

_STATUSES = [
    (LeadStatus.NEW.value, 25),
    (LeadStatus.IN_WORK.value, 35),
    (LeadStatus.CLOSED.value, 20),
    (LeadStatus.REFUSED.value, 20),
]
_FIRST = ["Азиз", "Нодира", "Шахзод", "Мадина", "Рустам", "Ольга", "Тимур", "Дильноза", "Сардор", "Анна"]
_LAST = ["Каримов", "Усманова", "Ахмедов", "Ким", "Иванов", "Турсунова", "Назаров", "Пак", "Юлдашев", "Смирнова"]
_FMT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DateTime on SQLite


@dataclass(frozen=True, slots=True)
class BenchData:
    path: Path | None  # the SQLite file; None on PostgreSQL
    leads: int
    team: list[tuple[int, Role]]  # (users.id, role), ids 1..len(TEAM)
    hot: list[int]  # lead ids with comments and history, spread over the table
    url: str = ""  # the database URL (for SQLite derived from ``path``)

    def __post_init__(self) -> None:
        if not self.url and self.path is not None:
            object.__setattr__(self, "url", f"sqlite+aiosqlite:///{self.path}")

    def telegram_id(self, user_id: int) -> int:
        return TG_BASE + user_id

    def users(self, *roles: Role) -> list[int]:
        return [user_id for user_id, role in self.team if role in roles]


def _schema_key() -> str:
    digest = hashlib.sha256(BUILDER_VERSION.encode())
    for path in sorted(MIGRATIONS_DIR.rglob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_LEAD_COLUMNS = (
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
    "refusal_reason",
    "deleted_at",
    "deleted_by_id",
    "reminder_count",
)


def hot_leads(leads: int) -> list[int]:
    step = max(1, leads // HOT_LEADS)
    return [1 + i * step + step // 2 for i in range(min(HOT_LEADS, leads))]


def _sqlite_stamp(moment: datetime) -> str:
    return moment.strftime(_FMT)


def _server_stamp(moment: datetime) -> datetime:
    return moment


def _team_rows(now: datetime, stamp: Callable[[datetime], Any] = _sqlite_stamp) -> list[tuple[object, ...]]:
    return [
        (user_id, TG_BASE + user_id, first, last, f"bench_{user_id}", role.value, True, "ru", stamp(now))
        for user_id, (role, first, last) in enumerate(TEAM, start=1)
    ]


def _lead_rows(
    leads: int, now: datetime, rng: random.Random, stamp: Callable[[datetime], Any] = _sqlite_stamp
) -> Iterator[tuple[object, ...]]:
    sellers = [i for i, (role, _, _) in enumerate(TEAM, start=1) if role == Role.SELLER]
    creators = [i for i, (role, _, _) in enumerate(TEAM, start=1) if role in (Role.ADMIN, Role.ROP, Role.MOP)]
    statuses = [s for s, w in _STATUSES for _ in range(w)]
    start = now - timedelta(days=730)
    span = (now - start).total_seconds()
    names = [f"{first} {last}" for first in _FIRST for last in _LAST]
    folded = [fold_for_search(name) for name in names]
    for lead_id in range(1, leads + 1):
        created = start + timedelta(seconds=span * lead_id / (leads + 1))
        created_s = stamp(created)
        status = statuses[rng.randrange(100)]
        name_index = rng.randrange(len(names))
        assignee = sellers[rng.randrange(len(sellers))] if rng.random() < 0.9 else None
        deleted = created_s if rng.random() < 0.01 else None
        yield (
            lead_id,
            names[name_index],
            folded[name_index],
            # A multiplier coprime with 10**7 maps 0..10**7-1 onto itself: unique, scattered numbers.
            f"+99890{(lead_id * 3_000_017) % 10_000_000:07d}",
            status,
            DEFAULT_SOURCES[rng.randrange(len(DEFAULT_SOURCES))],
            float(rng.randrange(20, 400) * 1000) if rng.random() < 0.7 else None,
            "Хочет двушку ближе к метро" if rng.random() < 0.2 else None,
            assignee,
            creators[rng.randrange(len(creators))],
            created_s,
            created_s,
            "Дорого" if status == LeadStatus.REFUSED.value else None,
            deleted,
            None if deleted is None else creators[0],
            0,
        )


def _fill(path: Path, leads: int) -> list[int]:
    rng = random.Random(20261126)
    now = datetime.now(UTC).replace(tzinfo=None)
    hot = hot_leads(leads)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # No rollback journal while filling (a half-built file is thrown away anyway): WAL would write
        # every page twice. The file goes back to WAL, as the bot runs it, at the end.
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-400000")  # ~400 MB: the indexes stay in memory while filling
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO users (id, telegram_id, first_name, last_name, username, role, is_active, language,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _team_rows(now),
        )
        connection.executemany(
            f"INSERT INTO leads ({', '.join(_LEAD_COLUMNS)}) VALUES ({', '.join('?' for _ in _LEAD_COLUMNS)})",
            _lead_rows(leads, now, rng),
        )
        # The opened leads must be live: clear a soft-delete the dice may have put there.
        connection.executemany(
            "UPDATE leads SET deleted_at = NULL, deleted_by_id = NULL WHERE id = ?", [(i,) for i in hot]
        )
        stamp = now.strftime(_FMT)
        comments = [
            (lead_id, f"Комментарий {k} <b>не жирный</b>: перезвонить после обеда", 5 + k % 4, stamp)
            for lead_id in hot
            for k in range(NOTES_PER_HOT_LEAD)
        ]
        connection.executemany(
            "INSERT INTO comments (lead_id, text, created_by_id, created_at) VALUES (?, ?, ?, ?)", comments
        )
        history = [
            (lead_id, "updated", "budget", str(k * 1000), str((k + 1) * 1000), 3, stamp)
            for lead_id in hot
            for k in range(NOTES_PER_HOT_LEAD)
        ]
        connection.executemany(
            "INSERT INTO lead_history (lead_id, action, field, old_value, new_value, changed_by_id, changed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            history,
        )
        connection.execute("COMMIT")
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    return hot


async def _migrate(path: Path, revision: str = "head") -> None:
    database = open_database(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(database.write_engine, revision)
    finally:
        await database.dispose()


def cached_database(
    leads: int = LEADS, *, rebuild: bool = False, log: bool = True, revision: str = "head"
) -> BenchData:
    """The built database file (built now unless a cached one with the same schema exists); migrated to
    ``revision`` (a benchmark of a later migration starts from an earlier one)."""
    cache_dir = Path(tempfile.gettempdir()) / "leadbot-bench"
    cache_dir.mkdir(exist_ok=True)
    at = "" if revision == "head" else f"-at-{revision}"
    path = cache_dir / f"leads-{leads}-{_schema_key()}{at}.db"
    team = [(user_id, role) for user_id, (role, _, _) in enumerate(TEAM, start=1)]
    if path.exists() and not rebuild:
        return BenchData(path=path, leads=leads, team=team, hot=hot_leads(leads))
    started = time.perf_counter()
    building = path.with_suffix(".building")
    for stale in (building, building.with_name(building.name + "-wal"), building.with_name(building.name + "-shm")):
        stale.unlink(missing_ok=True)
    asyncio.run(_migrate(building, revision))
    hot = _fill(building, leads)
    building.replace(path)
    if log:
        print(f"built {leads:,} leads in {time.perf_counter() - started:.1f} s: {path}")
    return BenchData(path=path, leads=leads, team=team, hot=hot)


def fresh_copy(data: BenchData, directory: Path) -> BenchData:
    """A private copy of the cached database in ``directory`` (the benchmark writes to its copy)."""
    assert data.path is not None, "a PostgreSQL database has no copy: see written_to"
    target = directory / "bench.db"
    shutil.copyfile(data.path, target)
    return BenchData(path=target, leads=data.leads, team=data.team, hot=data.hot)


async def _fill_server(url: str, leads: int) -> list[int]:
    rng = random.Random(20261126)
    now = datetime.now(UTC).replace(tzinfo=None)
    hot = hot_leads(leads)
    await recreate_schema(url)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await copy_rows(
            connection,
            "users",
            ("id", "telegram_id", "first_name", "last_name", "username", "role", "is_active", "language", "created_at"),
            _team_rows(now, _server_stamp),
        )
        await copy_rows(connection, "leads", _LEAD_COLUMNS, _lead_rows(leads, now, rng, _server_stamp))
        await connection.execute(
            "UPDATE leads SET deleted_at = NULL, deleted_by_id = NULL WHERE id = ANY($1::bigint[])", hot
        )
        await copy_rows(
            connection,
            "comments",
            ("lead_id", "text", "created_by_id", "created_at"),
            (
                (lead_id, f"Комментарий {k} <b>не жирный</b>: перезвонить после обеда", 5 + k % 4, now)
                for lead_id in hot
                for k in range(NOTES_PER_HOT_LEAD)
            ),
        )
        await copy_rows(
            connection,
            "lead_history",
            ("lead_id", "action", "field", "old_value", "new_value", "changed_by_id", "changed_at"),
            (
                (lead_id, "updated", "budget", str(k * 1000), str((k + 1) * 1000), 3, now)
                for lead_id in hot
                for k in range(NOTES_PER_HOT_LEAD)
            ),
        )
        await finish_load(connection, ["users", "leads"])
    finally:
        await connection.close()
    return hot


async def written_to(data: BenchData) -> None:
    """A PostgreSQL database a benchmark is about to write to: the next run builds it again."""
    await set_marker(data.url, None)


def server_database(url: str, leads: int = LEADS, *, rebuild: bool = False, log: bool = True) -> BenchData:
    """The same data in the PostgreSQL database at ``url`` (built now unless it holds them already)."""
    team = [(user_id, role) for user_id, (role, _, _) in enumerate(TEAM, start=1)]
    marker = f"bench/_data {schema_key('bench/_data ' + BUILDER_VERSION)} {leads}"
    if not rebuild and asyncio.run(built_marker(url)) == marker:
        return BenchData(path=None, url=url, leads=leads, team=team, hot=hot_leads(leads))
    started = time.perf_counter()
    hot = asyncio.run(_fill_server(url, leads))
    asyncio.run(set_marker(url, marker))
    if log:
        print(f"built {leads:,} leads in {time.perf_counter() - started:.1f} s in PostgreSQL")
    return BenchData(path=None, url=url, leads=leads, team=team, hot=hot)
