"""The database the core runs on: engines and session factories for reading and for writing.

Nothing here waits on the network inside a transaction (units of work are short; see ``db.uow``), so
the design only has to let short transactions run side by side:

- **SQLite** (the embedded default) allows one writer at a time and any number of readers beside it in
  WAL mode. Writes get an engine of their own with one connection, so writers queue for it in asyncio,
  in order, and each begins ``BEGIN IMMEDIATE`` (it holds the write lock from its first statement, so a
  read-then-write can never find its snapshot overtaken). Reads get a pool of connections opened
  ``query_only``: they never take the write lock, and a read unit that tried to write would fail loudly
  instead of racing. A read runs each statement on its own snapshot, with no ``BEGIN`` around them: the
  same read-committed view PostgreSQL gives a read unit (below), and no ``BEGIN``, ``COMMIT`` or
  ``ROLLBACK`` to send (``skip_autocommit_rollback``).
- **PostgreSQL** (asyncpg) needs none of that: one pool serves both, and read units run in
  ``READ ONLY`` transactions (``postgresql_readonly``).

Why the round trips are counted: aiosqlite runs each call on its own thread, and every call (a cursor,
a statement, a fetch, a close, a commit) is a hand-off to that thread and a wake-up of the event loop;
on a virtual machine whose other core is idle that costs 100–300 µs (about 60 µs within one core),
more than the statement itself. So nothing is sent that does nothing: readers send no transaction
statements, and a connection that comes back to the pool is rolled back only when its driver says a
transaction is still open (after a commit none is: the pool's default would send a ``ROLLBACK`` anyway).

Everything used here is public SQLAlchemy API: pool arguments, the ``connect``/``begin``/``reset`` events
the SQLAlchemy documentation gives for driving SQLite's transactions and resetting pooled connections,
and execution options; of aiosqlite, the connection's public ``in_transaction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool, PoolResetState, StaticPool

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
# How long a unit of work waits for a connection (or SQLite for its write lock) before giving up.
WAIT_SECONDS = 30


def one_core(url: str | URL) -> int | None:
    """On SQLite, keep this process's threads on one CPU core; the core, or None when nothing changed.

    Why: aiosqlite runs every call on a thread of its own and the event loop waits for it, so each
    statement is four hand-offs between two threads. When the other thread sits on another core that
    is idle, each hand-off wakes that core: 100–300 µs on a virtual machine, against about 60 µs between
    two threads of one core. Python runs one thread at a time anyway (the GIL), so one core costs the
    bot little: what it gives up is SQLite's own C work overlapping the event loop, which a long report
    or export would have used. ``[database] one_core = false`` gives that back.

    Call it first, from the main thread, before any thread is started: a thread keeps the affinity of
    the thread that started it (Linux). Where the OS has no affinity (macOS, Windows) nothing changes.
    """
    import os

    setaffinity = getattr(os, "sched_setaffinity", None)
    getaffinity = getattr(os, "sched_getaffinity", None)
    if not is_sqlite(url) or setaffinity is None or getaffinity is None:
        return None
    cores = sorted(getaffinity(0))
    if len(cores) < 2:
        return None
    # Spread processes (the bot and `leadbot api` on one file) rather than crowd the first core.
    core = cores[os.getpid() % len(cores)]
    setaffinity(0, {core})
    return int(core)


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
        reader = _sqlite_engine(parsed, wait, echo=echo, poolclass=NullPool, begin=None, query_only=True)
        return _database(parsed, writer, reader, read_only=False)
    if is_sqlite(parsed):
        if parsed.database in (None, "", ":memory:"):
            # One in-memory database exists per connection: everything shares the one connection.
            engine = _sqlite_engine(parsed, wait, echo=echo, poolclass=StaticPool, begin="BEGIN IMMEDIATE")
            return _database(parsed, engine, engine, read_only=False)
        writer = _sqlite_engine(parsed, wait, echo=echo, pool_size=1, max_overflow=0, begin="BEGIN IMMEDIATE")
        reader = _sqlite_engine(
            parsed, wait, echo=echo, pool_size=read_pool, max_overflow=0, begin=None, query_only=True
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
    url: URL, wait: float, *, echo: bool, begin: str | None, query_only: bool = False, **pool: Any
) -> AsyncEngine:
    """An engine whose units begin with ``begin`` (``None``: no transaction, each statement on its own)."""
    if pool.get("poolclass") not in (StaticPool, NullPool):
        pool["pool_timeout"] = wait
    engine = create_async_engine(
        url,
        echo=echo,
        connect_args={"timeout": wait},
        # Without a BEGIN there is nothing to roll back: the dialect skips the call in autocommit.
        skip_autocommit_rollback=begin is None,
        # The "reset" hook below decides instead: only a connection still in a transaction is rolled back.
        pool_reset_on_return=None,
        **pool,
    )

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

    @event.listens_for(engine.sync_engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        if not state.asyncio_safe:
            return
        try:
            open_transaction = dbapi_connection.driver_connection.in_transaction
        except ValueError:  # aiosqlite's answer for a connection already closed: nothing to reset
            return
        if open_transaction:
            dbapi_connection.rollback()

    if begin is not None:

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

    return engine
