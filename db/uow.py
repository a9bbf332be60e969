"""Unit of work: one session, one transaction, the repositories over it, and one explicit commit.

Nothing persists without ``commit()``; leaving the block without it rolls back. Domain events
collected during the work are handed to the ``EventSink`` (the notification outbox) right before the
commit, so a notification exists exactly when its change does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
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
        self.outbox = OutboxRepository(session)
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

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[UnitOfWork]:
        async with self.sessionmaker() as session:
            uow = UnitOfWork(session, self.settings, self.sink)
            try:
                yield uow
            finally:
                # Closing the session rolls back whatever was not committed; unlike rollback() it
                # leaves loaded objects readable after the block.
                uow.events.clear()
