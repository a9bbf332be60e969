"""Unit of work: one session, one transaction, the repositories over it, and one explicit commit.

Nothing persists without ``commit()``; leaving the block without it rolls back. Domain events collected
during the work are handed to the ``EventSink`` (the notification outbox) right before the commit, so a
notification exists exactly when its change does.

A unit is opened for writing (``factory()``) or for reading (``factory(read_only=True)``); see
``db.engine`` for what each means on each database. Either way it is short: it is opened for the work,
and committed or left before anything waits on the network. ``commit()`` gives the connection back to
the pool; a unit used again afterwards simply begins a new transaction.

A factory's ``on_outbox`` (``leadbot run`` sets it to the delivery worker's ``wake``) is called after a
commit that queued outbox rows, so a notification written in the bot's process goes out at once rather
than at the worker's next poll.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from db.analytics import AnalyticsRepository
from db.assignment import AutoAssigner
from db.engine import Database
from db.events import DomainEvent
from db.repositories import InviteRepository, LeadRepository, UserRepository
from db.repositories.followups import FollowUpRepository
from db.repositories.integrations import IntegrationRepository
from db.repositories.meta import MetaLeadRepository
from db.repositories.outbox import OutboxRepository
from db.repositories.reminders import ReminderRepository
from db.repositories.tokens import ApiTokenRepository, IdempotencyRepository
from db.settings import AccessSection, AssignmentSection, CrmSection


class CoreSettings(Protocol):
    """What the repositories read from the configuration (``bot.config.Settings`` is one)."""

    @property
    def access(self) -> AccessSection: ...

    @property
    def crm(self) -> CrmSection: ...

    @property
    def assignment(self) -> AssignmentSection: ...


class EventSink(Protocol):
    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None: ...


class ReadOnlyUnit(RuntimeError):
    """A change was committed through a unit of work opened for reading: a programming error."""


class UnitOfWork:
    def __init__(
        self,
        session: AsyncSession,
        settings: Any,
        sink: EventSink | None = None,
        *,
        read_only: bool = False,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.sink = sink
        self.read_only = read_only
        self.on_outbox = on_outbox
        self.events: list[DomainEvent] = []
        self.committed = False
        # The integration a change came from (its webhook, its pull): the change is not sent back there.
        self.origin: str | None = None
        self.users = UserRepository(session, settings.access)
        self.invites = InviteRepository(session, settings.access)
        self.assigner = AutoAssigner(session, settings.assignment, settings.crm)
        self.leads = LeadRepository(session, settings.crm, self.events, self.assigner)
        self.outbox = OutboxRepository(session)
        self.followups = FollowUpRepository(session)
        self.reminders = ReminderRepository(session)
        self.tokens = ApiTokenRepository(session)
        self.idempotency = IdempotencyRepository(session)
        self.meta = MetaLeadRepository(session)
        self.integrations = IntegrationRepository(session)
        self.analytics = AnalyticsRepository(session, settings.crm)

    def in_transaction(self) -> bool:
        return self.session.in_transaction()

    async def commit(self) -> None:
        """Write what was done (with its notifications) and give the connection back."""
        if self.read_only:
            sync = self.session.sync_session
            if self.events or sync.new or sync.dirty or sync.deleted:
                raise ReadOnlyUnit("a unit of work opened for reading has changes to commit")
            # Nothing to write: the read ends and its connection goes back. Closing sends nothing to
            # SQLite's readers (they hold no transaction, see db.engine); a COMMIT would be a round trip.
            # What was read stays readable (expire_on_commit=False; close detaches, never expires).
            await self.session.close()
            self.committed = True
            return
        if self.events and self.sink is not None:
            events = list(self.events)
            self.events.clear()
            await self.sink(self, events)
        self.events.clear()
        await self.session.commit()
        self.committed = True
        if self.outbox.queued:
            self.outbox.queued = False
            if self.on_outbox is not None:
                self.on_outbox()

    async def rollback(self) -> None:
        self.events.clear()
        self.outbox.queued = False
        await self.session.rollback()

    async def close(self) -> None:
        """Leave: what was not committed is rolled back and the connection goes back to the pool."""
        self.events.clear()
        await self.session.close()


class UnitOfWorkFactory:
    """What the bot, the API and the jobs use to open their units of work."""

    def __init__(self, database: Database, settings: Any, sink: EventSink | None = None) -> None:
        self.database = database
        self.settings = settings
        self.sink = sink
        # Called after a commit that queued outbox rows (the delivery worker's wake, in ``leadbot run``).
        self.on_outbox: Callable[[], None] | None = None

    def open(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit the caller must ``close()`` (``async with factory()`` does that for you)."""
        maker = self.database.reader if read_only else self.database.writer
        return UnitOfWork(maker(), self.settings, self.sink, read_only=read_only, on_outbox=self.on_outbox)

    def __call__(self, *, read_only: bool = False) -> UnitOfWorkScope:
        return UnitOfWorkScope(self, read_only)


class UnitOfWorkScope:
    """``async with uow_factory() as uow``: the unit of work, closed (rolled back if not committed) on exit.

    Unlike rollback(), leaving keeps loaded objects readable after the block.
    """

    __slots__ = ("_factory", "_read_only", "uow")

    def __init__(self, factory: UnitOfWorkFactory, read_only: bool) -> None:
        self._factory = factory
        self._read_only = read_only

    async def __aenter__(self) -> UnitOfWork:
        self.uow = self._factory.open(read_only=self._read_only)
        return self.uow

    async def __aexit__(self, *exc_info: object) -> None:
        await self.uow.close()
