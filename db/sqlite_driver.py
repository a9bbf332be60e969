"""aiosqlite with one thread hop per statement instead of four.

aiosqlite runs every sqlite3 call on the connection's own thread, and SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch all rows, close the cursor), each a round trip
between the event loop and that thread. On a busy machine a round trip costs far more than the
statement itself, so a lead card spent most of its time waiting for them.

``connect`` returns an ``aiosqlite.Connection`` (same thread, same queue, everything SQLAlchemy's
aiosqlite dialect relies on) whose cursors do all four steps in one call on the thread, keeping the
rows, description, rowcount and lastrowid for the adapter to read. Two more round trips go:

- ``BEGIN IMMEDIATE`` (see ``db.engine``) is sent together with the transaction's first statement,
  so the write lock is still taken before anything is read;
- commit and rollback without an open transaction (a pool reset after a commit, a transaction that
  never ran a statement) do nothing instead of asking the thread to do nothing.

Statements, transactions and errors are exactly sqlite3's: only the number of trips changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

BEGIN = "BEGIN IMMEDIATE"

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
