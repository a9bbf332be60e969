"""Unit of work: one session, one transaction, the repositories over it, and one explicit commit.

Nothing persists without ``commit()``; leaving the block without it rolls back. Domain events
collected during the work are handed to the ``EventSink`` (the notification outbox) right before the
commit, so a notification exists exactly when its change does.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from db.engine import runs_on_loop
from db.events import DomainEvent
from db.reader import Reader
from db.repositories import InviteRepository, LeadRepository, UserRepository
from db.repositories.followups import FollowUpRepository
from db.repositories.outbox import OutboxRepository
from db.repositories.reminders import ReminderRepository
from db.repositories.tokens import ApiTokenRepository, IdempotencyRepository


class EventSink(Protocol):
    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None: ...


class UnitOfWork:
    def __init__(self, session: AsyncSession, settings: Settings, sink: EventSink | None = None) -> None:
        self.session = session
        self.settings = settings
        self.sink = sink
        self.events: list[DomainEvent] = []
        self.committed = False
        self.reader = Reader(session)
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
        await self.session.commit()
        self.committed = True

    async def rollback(self) -> None:
        self.events.clear()
        await self.session.rollback()


class UnitOfWorkFactory:
    """What jobs and the API use to open their own unit of work."""

    def __init__(
        self, sessionmaker: async_sessionmaker[Any], settings: Settings, sink: EventSink | None = None
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.sink = sink
        self._close_inline = runs_on_loop(sessionmaker.kw.get("bind"))

    def __call__(self) -> UnitOfWorkScope:
        return UnitOfWorkScope(self.sessionmaker(), self.settings, self.sink, close_inline=self._close_inline)


class UnitOfWorkScope:
    """``async with uow_factory() as uow``: the unit of work, and its session closed on the way out.

    Closing rolls back whatever was not committed; unlike rollback() it leaves loaded objects readable
    after the block.
    """

    __slots__ = ("_close_inline", "session", "uow")

    def __init__(
        self, session: AsyncSession, settings: Settings, sink: EventSink | None, *, close_inline: bool
    ) -> None:
        self.session = session
        self.uow = UnitOfWork(session, settings, sink)
        self._close_inline = close_inline

    async def __aenter__(self) -> UnitOfWork:
        return self.uow

    async def __aexit__(self, *exc_info: object) -> None:
        self.uow.events.clear()
        if self._close_inline:
            # ``async with session`` closes it in a task of its own, shielded from cancellation: a task
            # and two turns of the event loop for every update. With the connection on the loop the
            # close never waits on anything, so no cancellation can cut it short: it is simply awaited,
            # and only when there is something to close: a commit has already given the connection back.
            if self.session.sync_session.in_transaction():
                await self.session.close()
        else:
            await self.session.__aexit__(*exc_info)
