"""Engine and session factory; SQLite is tuned for one bot process with bursts of writes."""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from db import sqlite_driver

# Engines whose connection runs on the event loop (db.sqlite_driver.InlineConnection): nothing they do
# ever waits on the loop, so closing a session cannot be cut short by a cancellation.
_ON_LOOP: weakref.WeakSet[AsyncEngine] = weakref.WeakSet()


def runs_on_loop(engine: object) -> bool:
    return isinstance(engine, AsyncEngine) and engine in _ON_LOOP


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, echo: bool = False, on_loop: bool = True) -> AsyncEngine:
    """The engine for ``url``; a SQLite file gets one connection, run on the event loop by default.

    ``on_loop=False`` keeps that connection on aiosqlite's thread instead (``db.sqlite_driver``
    explains what running on the loop can block, and for how long).
    """
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite(url):
        kwargs["connect_args"] = {"timeout": 30}
        parsed = make_url(url)
        if parsed.drivername == "sqlite+aiosqlite" and parsed.database not in (None, "", ":memory:"):
            # Every transaction takes the write lock (below), so transactions run one at a time anyway:
            # one connection queues them in asyncio, in order, instead of in SQLite's busy handler,
            # which polls with sleeps of up to 100 ms and made a burst of updates crawl. With one
            # connection nothing in the process contends for it, so it can run on the loop itself.
            kwargs |= {"pool_size": 1, "max_overflow": 0}
            cargs, cparams = parsed.get_dialect()().create_connect_args(parsed)
            if on_loop:
                kwargs["async_creator"] = lambda: sqlite_driver.connect_inline(*cargs, **cparams)
                # Rolled back on return by _rollback_on_return instead, straight on sqlite3: SQLAlchemy's
                # own reset awaits the driver, so a connection could be given back only from a greenlet.
                kwargs["pool_reset_on_return"] = None
            else:
                cparams["timeout"] = 30
                kwargs["async_creator"] = lambda: sqlite_driver.connect(*cargs, **cparams)
    engine = create_async_engine(url, **kwargs)
    if "async_creator" in kwargs and on_loop:
        _ON_LOOP.add(engine)
        event.listen(engine.sync_engine, "reset", _rollback_on_return)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # Take transaction control away from the driver so SAVEPOINTs work and BEGIN is ours to choose.
    dbapi_connection.isolation_level = None
    _sqlite_pragmas(dbapi_connection, record)


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes fails
    # at once with SQLITE_BUSY when another writer committed in between, whereas a waiting writer is
    # simply queued by the busy timeout. One update = one transaction, so updates serialise on writes.
    driver = connection.connection.driver_connection
    if isinstance(driver, sqlite_driver.InlineConnection):
        if driver.in_transaction:
            return  # begun by the unit of work's reader (db.uow): the session joins that transaction
        if driver.try_begin():
            return  # the usual case, straight on sqlite3; a lock held elsewhere is waited for below
    connection.exec_driver_sql(sqlite_driver.BEGIN)


def _rollback_on_return(dbapi_connection: Any, _record: Any, _state: Any) -> None:
    # What reset_on_return="rollback" does, for the on-loop driver, whose rollback never waits.
    driver = dbapi_connection.driver_connection
    if isinstance(driver, sqlite_driver.InlineConnection):
        driver.rollback_now()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; the busy timeout makes a second writer wait, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # On the event loop the wait is short and BEGIN IMMEDIATE retries in asyncio (db.sqlite_driver).
    busy_timeout = getattr(dbapi_connection.driver_connection, "busy_timeout_ms", 30_000)
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout)}")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
