"""Automatic assignment: who gets a new lead nobody assigned (``[assignment]``, see docs/intake.md).

``round_robin`` hands leads to the available salespeople in turn (by id, wrapping round); ``least_loaded``
to the one with the fewest open leads (ties: the next in turn). Available: an active salesperson who is
not paused, among the source's own list when ``[assignment.sources]`` names one (the whole team when
it does not, or when none of its people is available).

The turn is kept in ``assignment_cursors``, one row per scope, read and moved inside the caller's write
unit: it survives restarts, and two instances take turns on it (PostgreSQL locks the row until the
commit; SQLite has a single writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import permissions
from db.durations import in_working_hours
from db.enums import LeadStatus
from db.models import AssignmentCursor, Lead, User, utcnow
from db.settings import AssignmentSection, CrmSection
from db.sql import insert_or_skip

OPEN_STATUSES = (LeadStatus.NEW, LeadStatus.IN_WORK)
ALL_SCOPE = "all"

_CURSOR_TABLE = cast(Table, AssignmentCursor.__table__)


class AutoAssigner:
    """Picks the salesperson for a new unassigned lead, inside the caller's unit of work (never commits)."""

    def __init__(self, session: AsyncSession, section: AssignmentSection, crm: CrmSection) -> None:
        self.session = session
        self.section = section
        self.crm = crm

    @property
    def enabled(self) -> bool:
        return self.section.automatic

    async def pick(self, source: str, *, now: datetime | None = None) -> User | None:
        """The salesperson a new lead from ``source`` goes to, the turn moved on; None: it stays unassigned
        (manual mode, outside working hours when those are asked for, or nobody available)."""
        section = self.section
        if not section.automatic:
            return None
        now = now or utcnow()
        if section.working_hours_only and not in_working_hours(now, section.working_hours, self.crm.tz):
            return None
        scope, people = await self._candidates(source)
        if not people:
            return None
        last_id = await self._lock_cursor(scope, now)
        in_turn = _rotation(people, last_id)
        if section.mode == "least_loaded":
            loads = await self._open_counts([user.id for user in people])
            # min() keeps the first of equals: the next in turn among the least loaded.
            chosen = min(in_turn, key=lambda user: loads.get(user.id, 0))
        else:
            chosen = in_turn[0]
        await self.session.execute(
            update(AssignmentCursor)
            .where(AssignmentCursor.scope == scope)
            .values(last_user_id=chosen.id, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return chosen

    async def _candidates(self, source: str) -> tuple[str, list[User]]:
        listed = _listed_for(self.section, source)
        if listed:
            people = await self._available(listed)
            if people:
                return f"source:{source.casefold()}"[:96], people
        return ALL_SCOPE, await self._available(None)

    async def _available(self, telegram_ids: Sequence[int] | None) -> list[User]:
        stmt = select(User).where(
            User.is_active.is_(True),
            User.paused.is_(False),
            User.role.in_([role.value for role in permissions.ASSIGNABLE_ROLES]),
        )
        if telegram_ids is not None:
            stmt = stmt.where(User.telegram_id.in_(list(telegram_ids)))
        return list((await self.session.scalars(stmt.order_by(User.id))).all())

    async def _lock_cursor(self, scope: str, now: datetime) -> int | None:
        """The scope's cursor, created on first use and locked until the commit (PostgreSQL)."""
        create = insert_or_skip(self.session, _CURSOR_TABLE, [AssignmentCursor.scope])
        await self.session.execute(create, {"scope": scope, "last_user_id": None, "updated_at": now})
        stmt = select(AssignmentCursor.last_user_id).where(AssignmentCursor.scope == scope).with_for_update()
        return await self.session.scalar(stmt)

    async def _open_counts(self, user_ids: list[int]) -> dict[int, int]:
        rows = await self.session.execute(
            select(Lead.assigned_to_id, func.count())
            .where(
                Lead.deleted_at.is_(None),
                Lead.assigned_to_id.in_(user_ids),
                Lead.status.in_([status.value for status in OPEN_STATUSES]),
            )
            .group_by(Lead.assigned_to_id)
        )
        return {user_id: count for user_id, count in rows.all() if user_id is not None}


def _listed_for(section: AssignmentSection, source: str) -> list[int]:
    folded = source.casefold()
    for name, telegram_ids in section.sources.items():
        if name.casefold() == folded:
            return telegram_ids
    return []


def _rotation(people: list[User], last_id: int | None) -> list[User]:
    """``people`` (by id) starting with the first after ``last_id``, wrapping round."""
    if last_id is None:
        return people
    start = next((i for i, user in enumerate(people) if user.id > last_id), 0)
    return people[start:] + people[:start]
