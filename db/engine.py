"""The database the core runs on: engines and session factories for reading and for writing.

Nothing here waits on the network inside a transaction (units of work are short; see ``db.uow``), so
the design only has to let short transactions run side by side:

- **SQLite** (the embedded default) allows one writer at a time and any number of readers beside it in
  WAL mode. Writes get an engine of their own with one connection, so writers queue for it in asyncio,
  in order, and each begins ``BEGIN IMMEDIATE`` (it holds the write lock from its first statement, so a
  read-then-write can never find its snapshot overtaken). Reads get a pool of connections that begin a
  plain deferred ``BEGIN`` and are opened ``query_only``: they never take the write lock, and a read
  unit that tried to write would fail loudly instead of racing.
- **PostgreSQL** (asyncpg) needs none of that: one pool serves both, and read units run in
  ``READ ONLY`` transactions (``postgresql_readonly``).

Everything used here is public SQLAlchemy API: pool arguments, the ``connect``/``begin`` events the
SQLAlchemy documentation gives for driving SQLite's transactions, and execution options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
# How long a unit of work waits for a connection (or SQLite for its write lock) before giving up.
WAIT_SECONDS = 30


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def check_url(url: str) -> URL:
    """``url`` parsed, or ValueError naming what is supported."""
    parsed = make_url(url)
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ValueError(f"database.url: unsupported driver {parsed.drivername!r}; use one of {SUPPORTED_DRIVERS}")
    return parsed


@dataclass(frozen=True, slots=True)
class Database:
    """Where units of work get their sessions: ``writer`` for changes, ``reader`` for everything else.

    On PostgreSQL and in-memory SQLite both session factories share one engine.
    """

    url: URL
    write_engine: AsyncEngine
    read_engine: AsyncEngine
    writer: async_sessionmaker[Any]
    reader: async_sessionmaker[Any]

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()


def open_database(
    url: str, *, echo: bool = False, read_pool: int = 8, pooled: bool = True, wait: float = WAIT_SECONDS
) -> Database:
    """Engines and session factories for ``url`` (nothing connects until first used).

    ``wait`` is how long, in seconds, a unit of work waits for a connection or for SQLite's write lock
    before it gives up (the API answers 503 then).

    ``pooled=False`` opens a connection per unit of work and keeps none, for callers that use the
    database from more than one event loop; SQLite's busy timeout then queues the writers.
    """
    parsed = check_url(url)
    if not pooled:
        if not is_sqlite(parsed):
            engine = create_async_engine(parsed, echo=echo, poolclass=NullPool, connect_args={"timeout": wait})
            return _database(parsed, engine, engine, read_only=True)
        writer = _sqlite_engine(parsed, wait, echo=echo, poolclass=NullPool, begin="BEGIN IMMEDIATE")
        reader = _sqlite_engine(parsed, wait, echo=echo, poolclass=NullPool, begin="BEGIN", query_only=True)
        return _database(parsed, writer, reader, read_only=False)
    if is_sqlite(parsed):
        if parsed.database in (None, "", ":memory:"):
            # One in-memory database exists per connection: everything shares the one connection.
            engine = _sqlite_engine(parsed, wait, echo=echo, poolclass=StaticPool, begin="BEGIN IMMEDIATE")
            return _database(parsed, engine, engine, read_only=False)
        writer = _sqlite_engine(parsed, wait, echo=echo, pool_size=1, max_overflow=0, begin="BEGIN IMMEDIATE")
        reader = _sqlite_engine(
            parsed, wait, echo=echo, pool_size=read_pool, max_overflow=0, begin="BEGIN", query_only=True
        )
        return _database(parsed, writer, reader, read_only=False)
    engine = create_async_engine(
        parsed,
        echo=echo,
        pool_size=read_pool,
        max_overflow=read_pool,
        pool_timeout=wait,
        pool_pre_ping=True,
    )
    return _database(parsed, engine, engine, read_only=True)


def _database(url: URL, write_engine: AsyncEngine, read_engine: AsyncEngine, *, read_only: bool) -> Database:
    reader_bind = read_engine.execution_options(postgresql_readonly=True) if read_only else read_engine
    return Database(
        url=url,
        write_engine=write_engine,
        read_engine=read_engine,
        writer=async_sessionmaker(write_engine, expire_on_commit=False),
        reader=async_sessionmaker(reader_bind, expire_on_commit=False),
    )


def _sqlite_engine(
    url: URL, wait: float, *, echo: bool, begin: str, query_only: bool = False, **pool: Any
) -> AsyncEngine:
    if pool.get("poolclass") not in (StaticPool, NullPool):
        pool["pool_timeout"] = wait
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": wait}, **pool)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not begin transactions by itself: the "begin" hook below says how.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the writer; the busy timeout makes another process's writer wait.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
        if query_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine
