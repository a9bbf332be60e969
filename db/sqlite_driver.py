"""SQLite drivers for SQLAlchemy's aiosqlite dialect: on the event loop (the default) or on a thread.

**On the event loop** (``connect_inline``, what ``db.engine`` uses for a database file). The bot runs
one connection per process (``pool_size=1``): every transaction takes the write lock, so they ran one
at a time anyway, and asyncio queues them in order. With a single connection nothing in the process
can contend for it, so there is nothing for a worker thread to wait on: the SQL of an update takes
microseconds, while a round trip to aiosqlite's thread costs 0.1 ms on an idle machine and several ms
on a busy one. ``InlineConnection`` is the small part of ``aiosqlite.Connection`` that SQLAlchemy's
adapter uses (``cursor()``, ``commit``/``rollback``/``close``/``create_function``, ``isolation_level``,
``_conn``, ``_tx``, ``_connection``, ``stop()``), and runs each call directly on a plain
``sqlite3.Connection``. Statements, transactions, savepoints and errors are sqlite3's own.

What can block the loop, and how it is bounded:

- **Another process holding the write lock** (``leadbot api`` run separately on the same file, the
  ``leadbot token issue`` CLI, a backup or ``sqlite3`` shell writing). SQLite's busy handler would
  sleep on the loop's thread, freezing every coroutine. So the inline connection's busy timeout is
  short (``BUSY_TIMEOUT_MS``, 50 ms), and when ``BEGIN IMMEDIATE`` — the first statement of every
  transaction (``db.engine``), where nothing has been read or written yet and a retry is safe — still
  finds the lock taken, it is retried with the busy timeout at 0 and ``asyncio.sleep`` between
  attempts (2 ms doubling to 50 ms), for up to ``LOCK_WAIT`` (30 s, as the thread driver's timeout),
  then fails with sqlite3's own "database is locked". The loop is blocked at most 50 ms per contended
  transaction; meanwhile other coroutines run (and queue behind this one for the connection).
- **Any other statement meeting a lock** waits at most those 50 ms on the loop and then fails as
  sqlite3 fails. In WAL mode a transaction that holds the write lock (all of ours) practically never
  meets one: readers never block it, and the automatic checkpoint after a commit does not wait.
- **A slow statement** runs on the loop for its whole length. The bot's statements are index seeks
  (microseconds to a millisecond on a million leads); the exceptions are scans — ``/find`` of a rare
  text, the HTTP API's first count of a filter — which take 0.05–0.5 s on a million leads and stall
  the loop that long (they held the only connection, hence the write lock, that long before too).

**On a thread** (``connect``): an ``aiosqlite.Connection`` whose cursors do SQLAlchemy's four calls per
statement (open a cursor, execute, fetch all rows, close) in one trip to aiosqlite's thread, keeping the
rows, description, rowcount and lastrowid for the adapter to read. Two more round trips go:

- ``BEGIN IMMEDIATE`` is sent together with the transaction's first statement, so the write lock is
  still taken before anything is read;
- commit and rollback without an open transaction (a pool reset after a commit, a transaction that
  never ran a statement) do nothing instead of asking the thread to do nothing.

It blocks nothing on the loop, at a cost of a thread round trip per statement
(``create_engine(..., on_loop=False)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import aiosqlite

BEGIN = "BEGIN IMMEDIATE"
BUSY_TIMEOUT_MS = 50
LOCK_WAIT = 30.0
_FIRST_DELAY = 0.002
_MAX_DELAY = 0.05

_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, begin: bool, sql: str, parameters: Any, many: bool) -> _Outcome:
    if begin:
        connection.execute(BEGIN)
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class Cursor:
    """What SQLAlchemy's adapter uses of an aiosqlite cursor; each execute is one trip to the thread."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return await self._run(sql, parameters if parameters is not None else (), many=False)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        return await self._run(sql, parameters, many=True)

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> Cursor:
        connection = self._connection
        if sql == BEGIN and not many:
            # Sent with the next statement, in the same trip: nothing else reaches SQLite in between.
            connection.begin_pending = True
            self.description, self.rowcount, self.lastrowid, self._rows = None, -1, None, []
            return self
        begin, connection.begin_pending = connection.begin_pending, False
        outcome = await connection._execute(_run, connection._conn, begin, sql, parameters, many)
        self.description, self.rowcount, self.lastrowid, self._rows = outcome
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        size = self.arraysize if size is None else size
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchall(self) -> Sequence[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class _CursorContext:
    """``connection.cursor()``: awaitable and an async context manager, like aiosqlite's."""

    def __init__(self, connection: Connection) -> None:
        self._cursor = Cursor(connection)

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> Cursor:
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.close()


class Connection(aiosqlite.Connection):
    begin_pending = False

    def cursor(self) -> _CursorContext:  # type: ignore[override]
        return _CursorContext(self)

    def _idle(self) -> bool:
        """No transaction is open (and none is waiting to begin with the next statement)."""
        if self.begin_pending:
            self.begin_pending = False
            return True
        connection = self._connection
        return connection is None or not connection.in_transaction

    async def commit(self) -> None:
        if not self._idle():
            await super().commit()

    async def rollback(self) -> None:
        if not self._idle():
            await super().rollback()


async def connect(database: str, **kwargs: Any) -> Connection:
    """Open a connection (its thread a daemon, as SQLAlchemy makes aiosqlite's)."""

    def connector() -> sqlite3.Connection:
        return sqlite3.connect(database, **kwargs)

    connection = Connection(connector, iter_chunk_size=64)
    connection._thread.daemon = True
    await connection  # starts the thread and connects on it
    return connection


# ---- on the event loop ---------------------------------------------------------------------------------


def _busy(error: sqlite3.OperationalError) -> bool:
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


class InlineCursor:
    """A ``sqlite3.Cursor`` behind the awaitable interface SQLAlchemy's adapter calls."""

    __slots__ = ("_connection", "_cursor")

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection
        self._cursor = connection._conn.cursor()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        if sql == BEGIN:
            await self._connection.begin()
        elif parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def __aiter__(self) -> AsyncIterator[Any]:
        for row in self._cursor:
            yield row


class _InlineCursorContext:
    """``connection.cursor()``: awaitable and an async context manager, like aiosqlite's."""

    __slots__ = ("_cursor",)

    def __init__(self, connection: InlineConnection) -> None:
        self._cursor = InlineCursor(connection)

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> InlineCursor:
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.close()


class _RunNow:
    """Stands in for aiosqlite's queue of calls to its thread: runs the call at once."""

    __slots__ = ()

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as error:  # handed to whoever awaits the future
            future.set_exception(error)
        else:
            future.set_result(result)


class InlineConnection:
    """What SQLAlchemy's aiosqlite adapter uses of ``aiosqlite.Connection``, run on the calling thread."""

    def __init__(
        self, connection: sqlite3.Connection, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS, lock_wait: float = LOCK_WAIT
    ) -> None:
        self._conn = connection
        # The adapter checks ``_connection`` for "still open".
        self._connection: sqlite3.Connection | None = connection
        self._tx = _RunNow()
        self.busy_timeout_ms = busy_timeout_ms
        self.lock_wait = lock_wait
        # Set when try_begin met the lock, so begin() goes straight to waiting in asyncio: the loop is
        # still blocked by one busy timeout per contended transaction, not two.
        self._begin_busy: sqlite3.OperationalError | None = None

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value  # type: ignore[assignment]

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def cursor(self) -> _InlineCursorContext:
        return _InlineCursorContext(self)

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        cursor = InlineCursor(self)
        return await cursor.execute(sql, parameters)

    def _attempt_begin(self) -> sqlite3.OperationalError | None:
        """One ``BEGIN IMMEDIATE``: None when it began, the "database is locked" error when not."""
        try:
            self._conn.execute(BEGIN)
        except sqlite3.OperationalError as error:
            if not _busy(error):
                raise
            return error
        return None

    def try_begin(self) -> bool:
        """``BEGIN IMMEDIATE`` without leaving the caller's thread (what ``db.engine`` does first), or
        False when another process holds the lock: then ``begin`` waits for it in asyncio."""
        self._begin_busy = self._attempt_begin()
        return self._begin_busy is None

    async def begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for another process's write lock without blocking the loop."""
        last, self._begin_busy = self._begin_busy, None
        if last is None:
            last = self._attempt_begin()
            if last is None:
                return
        connection = self._conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait
        delay = _FIRST_DELAY
        # From here each attempt returns at once; the waiting is done in asyncio.sleep.
        connection.execute("PRAGMA busy_timeout = 0")
        try:
            while loop.time() + delay <= deadline:
                await asyncio.sleep(delay)
                error = self._attempt_begin()
                if error is None:
                    return
                last = error
                delay = min(delay * 2, _MAX_DELAY)
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        raise last

    async def commit(self) -> None:
        self._conn.commit()  # nothing to do (and nothing done) outside a transaction

    async def rollback(self) -> None:
        self._conn.rollback()

    def rollback_now(self) -> None:
        """``rollback`` for callers that cannot await (the pool giving the connection back)."""
        if self._connection is not None:
            self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        """Close at once (SQLAlchemy's terminate, also from garbage collection)."""
        if self._connection is not None:
            self._connection = None
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()


async def connect_inline(database: str, **kwargs: Any) -> InlineConnection:
    """Open a connection that runs on the event loop (see the module's docstring for the limits)."""
    kwargs["check_same_thread"] = False  # closed by garbage collection from wherever it runs
    kwargs["timeout"] = BUSY_TIMEOUT_MS / 1000
    return InlineConnection(sqlite3.connect(database, **kwargs))
