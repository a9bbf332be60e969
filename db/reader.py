"""Hot-path reads: prebuilt SELECTs run on the unit of work's own connection with the least machinery.

The card, the lists, the acting user and the /new summary are read on every update. Through an
``AsyncSession`` each SELECT costs a greenlet switch, the ORM's compile-cache lookup, result set-up and,
for entities, identity-map bookkeeping: about 0.1–0.3 ms, where SQLite itself needs 10–50 µs. ``Query``
compiles its Core statement once per dialect into SQL text, the order of its parameters and the type
processors of its columns; ``Reader`` runs it:

- on SQLite on the event loop (``db.sqlite_driver.InlineConnection``, the default), directly on the
  ``sqlite3`` connection of the unit of work's transaction (``db.uow``), which the reader begins itself
  when it comes first and the session joins; so the rows see everything the update has written so far
  (pending ORM changes are flushed first, as the session's autoflush would) under the one ``BEGIN
  IMMEDIATE``;
- on anything else (another database, the thread driver), through ``session.execute`` as usual.

Both ways give the same plain rows (sequences) with the same Python values. Only column SELECTs belong
here (no ORM entities, no expanding ``IN``); what they return becomes small row types, not ORM objects.

Creating a lead writes its rows the same way (``Query`` of a Core INSERT with its column names, run by
``all`` when it has RETURNING, by ``many`` once per row otherwise): rows nobody changes afterwards need
no unit of work, and each statement through the session would cost that same overhead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import SessionTransaction

from db.sqlite_driver import InlineConnection

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    required: bool  # a bindparam() the caller supplies; otherwise a value compiled into the statement
    value: Any
    process: _Processor


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    params: tuple[_Param, ...]
    # (position, processor) of the columns whose values SQLAlchemy would convert; the others are taken
    # as sqlite3 gives them. Empty: rows are returned as they come.
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]


class Query:
    """A Core SELECT of columns, built once at import time, with its compiled SQLite form cached.

    Or a Core INSERT of the named ``columns`` (the keys of each row given), RETURNING plain columns or nothing.
    """

    __slots__ = ("_plans", "columns", "stmt")

    def __init__(self, stmt: Select[*tuple[Any, ...]] | Insert, columns: Sequence[str] | None = None) -> None:
        if isinstance(stmt, Insert) != (columns is not None):
            raise TypeError("an INSERT needs its column names, a SELECT has none")
        self.stmt = stmt
        self.columns = None if columns is None else list(columns)
        self._plans: dict[str, _Plan] = {}

    def plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            plan = self._plans[dialect.name] = self._compile(dialect)
        return plan

    def _compile(self, dialect: Dialect) -> _Plan:
        compiled = self.stmt.compile(dialect=dialect, column_keys=self.columns)
        if compiled.positiontup is None:
            raise TypeError(f"{dialect.name} does not use positional parameters")
        params = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            params.append(
                _Param(
                    name=name,
                    required=bind.required,
                    value=None if bind.required else bind.effective_value,
                    process=bind.type.dialect_impl(dialect).bind_processor(dialect),
                )
            )
        selected = self.stmt.selected_columns if isinstance(self.stmt, Select) else self.stmt.exported_columns
        processors = (column.type.dialect_impl(dialect).result_processor(dialect, None) for column in selected)
        return _Plan(
            sql=compiled.string,
            params=tuple(params),
            processed=tuple((index, process) for index, process in enumerate(processors) if process is not None),
        )


class Reader:
    """Runs ``Query`` objects inside a session's transaction (see the module's docstring)."""

    __slots__ = ("_connection", "_dialect", "_inline", "_transaction", "session")

    def __init__(
        self, session: AsyncSession, inline: InlineConnection | None = None, dialect: Dialect | None = None
    ) -> None:
        self.session = session
        # The unit of work's own connection when it runs on the loop (db.uow): its transaction, begun
        # by whichever comes first, the reader or the session, is the one both use.
        self._inline = inline
        self._transaction: SessionTransaction | None = None
        self._connection: sqlite3.Connection | None = None
        self._dialect: Dialect | None = dialect

    async def all(self, query: Query, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        connection = await self._sqlite()
        if connection is None:
            return [tuple(row) for row in (await self.session.execute(query.stmt, dict(params or {}))).all()]
        assert self._dialect is not None
        plan = query.plan(self._dialect)
        rows = connection.execute(plan.sql, _bind(plan, params or {})).fetchall()
        processed = plan.processed
        if not processed:
            return rows
        converted: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for index, process in processed:
                values[index] = process(values[index])
            converted.append(values)
        return converted

    async def one_or_none(self, query: Query, params: Mapping[str, Any] | None = None) -> Sequence[Any] | None:
        rows = await self.all(query, params)
        return rows[0] if rows else None

    async def many(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run ``query`` (an INSERT without RETURNING) once per row, in one executemany."""
        if not rows:
            return
        connection = await self._sqlite()
        if connection is None:
            await self.session.execute(query.stmt, list(rows))
            return
        assert self._dialect is not None
        plan = query.plan(self._dialect)
        connection.executemany(plan.sql, [_bind(plan, row) for row in rows])

    async def _sqlite(self) -> sqlite3.Connection | None:
        """The ``sqlite3`` connection of the session's current transaction, or None to go through the ORM."""
        session = self.session.sync_session
        if session.autoflush and (session.new or session.deleted or session.dirty):
            await self.session.flush()
        inline = self._inline
        if inline is not None:
            if not inline.in_transaction:
                await inline.begin()
            return inline._conn
        transaction = session.get_transaction()
        if transaction is not None and transaction is self._transaction:
            return self._connection
        connection = await self.session.connection()
        # The connection is checked out already: reading it from the sync side needs no greenlet hop.
        driver = connection.sync_connection.connection.driver_connection if connection.sync_connection else None
        self._connection = driver._conn if isinstance(driver, InlineConnection) else None
        self._dialect = connection.dialect
        self._transaction = session.get_transaction()
        return self._connection


def _bind(plan: _Plan, given: Mapping[str, Any]) -> list[Any]:
    """The positional parameters of ``plan`` from ``given``, type-processed as SQLAlchemy would."""
    values = []
    for param in plan.params:
        value = given[param.name] if param.required else given.get(param.name, param.value)
        values.append(value if param.process is None or value is None else param.process(value))
    return values
