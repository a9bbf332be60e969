"""Unit of work: one session, one transaction, the repositories over it, and one explicit commit.

Nothing persists without ``commit()``; leaving the block without it rolls back. Domain events
collected during the work are handed to the ``EventSink`` (the notification outbox) right before the
commit, so a notification exists exactly when its change does.

With SQLite on the event loop (the default engine) the unit of work checks out the connection itself
and binds its session to it. Its transaction (``BEGIN IMMEDIATE``) is begun by whichever needs it
first: the reader (``db.reader``, the hot reads) straight on ``sqlite3``, or the session, which then
finds the transaction open and joins it (``db.engine``). An update that only reads — the card, a list
— so never pays for the session's transaction machinery (a third of such an update's time, where SQLite
itself needs microseconds), and one that writes still reads and writes in one transaction. Elsewhere
(another database, the thread driver) the session manages its connection and transaction as usual.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from bot.config import Settings
from db.engine import runs_on_loop
from db.events import DomainEvent
from db.reader import Reader
from db.repositories import InviteRepository, LeadRepository, UserRepository
from db.repositories.followups import FollowUpRepository
from db.repositories.outbox import OutboxRepository
from db.repositories.reminders import ReminderRepository
from db.repositories.tokens import ApiTokenRepository, IdempotencyRepository
from db.sqlite_driver import InlineConnection


def _checkout_now(engine: AsyncEngine) -> AsyncConnection | None:
    """The pool's idle connection without the greenlet ``engine.connect()`` runs in, or None.

    On the loop nothing in a checkout waits once a connection is idle in the pool (``db.engine`` gives
    connections back with a plain rollback), so it can be done directly: a third of what opening and
    closing a unit of work cost. None when the pool has nothing idle (another unit holds the
    connection: ``engine.connect()`` queues for it) or the connection must be made anew, which awaits.
    """
    sync_engine = engine.sync_engine
    if not sync_engine.pool.checkedin():  # type: ignore[attr-defined]
        return None
    try:
        return AsyncConnection(engine, sync_engine.connect())
    except MissingGreenlet:
        return None


class EventSink(Protocol):
    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None: ...


class UnitOfWork:
    def __init__(
        self,
        session: AsyncSession,
        settings: Settings,
        sink: EventSink | None = None,
        *,
        connection: AsyncConnection | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.sink = sink
        self.events: list[DomainEvent] = []
        self.committed = False
        # The connection this unit checked out and its driver, when SQLite runs on the loop (see above).
        self.connection = connection
        self.inline: InlineConnection | None = None
        if connection is not None:
            driver = connection.sync_connection.connection.driver_connection if connection.sync_connection else None
            if not isinstance(driver, InlineConnection):
                raise TypeError("a unit of work's own connection must be SQLite on the event loop")
            self.inline = driver
        self.reader = Reader(session, self.inline, connection.dialect if connection is not None else None)
        self.users = UserRepository(session, settings.access, self.reader)
        self.invites = InviteRepository(session, settings.access)
        self.leads = LeadRepository(session, settings.crm, self.events, self.reader)
        self.outbox = OutboxRepository(session, self.reader)
        self.followups = FollowUpRepository(session)
        self.reminders = ReminderRepository(session)
        self.tokens = ApiTokenRepository(session)
        self.idempotency = IdempotencyRepository(session)

    async def commit(self) -> None:
        if self.events and self.sink is not None:
            events = list(self.events)
            self.events.clear()
            await self.sink(self, events)
        self.events.clear()
        inline, connection = self.inline, self.connection
        if inline is None or connection is None:
            await self.session.commit()
        else:
            sync = self.session.sync_session
            # The session commits when it has something to write or began the transaction itself
            # (committing it commits the transaction); what is left open was begun by the reader.
            if sync.new or sync.dirty or sync.deleted or connection.in_transaction():
                await self.session.commit()
            if inline.in_transaction:
                await inline.commit()
        self.committed = True

    async def rollback(self) -> None:
        self.events.clear()
        await self.session.rollback()
        if self.inline is not None and self.inline.in_transaction:
            await self.inline.rollback()


class UnitOfWorkFactory:
    """What jobs and the API use to open their own unit of work."""

    def __init__(
        self, sessionmaker: async_sessionmaker[Any], settings: Settings, sink: EventSink | None = None
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.sink = sink
        bind = sessionmaker.kw.get("bind")
        self._engine: AsyncEngine | None = bind if isinstance(bind, AsyncEngine) and runs_on_loop(bind) else None

    def __call__(self) -> UnitOfWorkScope:
        return UnitOfWorkScope(self)


class UnitOfWorkScope:
    """``async with uow_factory() as uow``: the unit of work, and what it holds let go on the way out.

    Leaving rolls back whatever was not committed; unlike rollback() it leaves loaded objects readable
    after the block.
    """

    __slots__ = ("_factory", "uow")

    def __init__(self, factory: UnitOfWorkFactory) -> None:
        self._factory = factory

    async def __aenter__(self) -> UnitOfWork:
        factory = self._factory
        if factory._engine is None:
            self.uow = UnitOfWork(factory.sessionmaker(), factory.settings, factory.sink)
        else:
            connection = _checkout_now(factory._engine) or await factory._engine.connect()
            try:
                session = factory.sessionmaker(bind=connection)
                self.uow = UnitOfWork(session, factory.settings, factory.sink, connection=connection)
            except BaseException:
                await connection.close()  # never entered, so __aexit__ will not give it back
                raise
        return self.uow

    async def __aexit__(self, *exc_info: object) -> None:
        uow = self.uow
        uow.events.clear()
        connection, inline = uow.connection, uow.inline
        if connection is None or inline is None:
            await uow.session.__aexit__(*exc_info)
            return
        # Not ``async with``: SQLAlchemy closes in a task of its own, shielded from cancellation, which
        # costs a task and two turns of the event loop per update. On the loop nothing here ever waits,
        # so no cancellation can cut it short.
        try:
            if connection.in_transaction():  # begun by the session and not committed: it rolls it back
                await uow.session.close()
        finally:
            try:
                if inline.in_transaction:  # begun by the reader and not committed
                    await inline.rollback()
            finally:
                sync = connection.sync_connection
                if sync is not None and not sync.in_transaction():
                    sync.close()  # back to the pool at once: no transaction for the driver to end
                else:
                    await connection.close()
