"""State of the reminders about leads waiting in «новый», and what the daily digest counts.

The state lives on the lead (``reminder_count``, ``next_reminder_at``) and every query here walks the
``ix_leads_reminder_due`` index (status, next_reminder_at), so a tick costs the same however many
leads there are.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import permissions
from db.enums import HistoryAction, LeadStatus, Role
from db.errors import Forbidden, InvalidInput, NotFound
from db.models import Lead, LeadHistory, OutboxMessage, User
from db.permissions import Actor


class ReminderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---- new leads -------------------------------------------------------------------------------------

    async def arm(self, first_after: timedelta, *, limit: int = 500) -> int:
        """Give every lead in «новый» without a reminder time its first one.

        The clock starts when the lead entered «новый»: its creation, or its latest reopening. Counting
        starts over, so a reopened lead is reminded (and escalated) afresh.
        """
        entered = (
            select(func.max(LeadHistory.changed_at))
            .where(
                LeadHistory.lead_id == Lead.id,
                LeadHistory.action == HistoryAction.STATUS_CHANGED.value,
                LeadHistory.new_value == LeadStatus.NEW.value,
            )
            .scalar_subquery()
        )
        rows = (
            await self.session.execute(
                select(Lead, entered)
                .where(Lead.status == LeadStatus.NEW, Lead.next_reminder_at.is_(None), Lead.deleted_at.is_(None))
                .limit(limit)
            )
        ).all()
        for lead, reopened_at in rows:
            start = lead.created_at
            if reopened_at is not None:
                # A raw scalar comes back as SQLite's naive text, not through UTCDateTime.
                reopened = reopened_at if isinstance(reopened_at, datetime) else datetime.fromisoformat(reopened_at)
                start = max(start, reopened.replace(tzinfo=start.tzinfo))
            lead.next_reminder_at = start + first_after
            lead.reminder_count = 0
        return len(rows)

    async def due_lead_ids(self, now: datetime, *, limit: int) -> list[int]:
        rows = await self.session.scalars(
            select(Lead.id)
            .where(Lead.status == LeadStatus.NEW, Lead.next_reminder_at <= now, Lead.deleted_at.is_(None))
            .order_by(Lead.next_reminder_at, Lead.id)
            .limit(limit)
        )
        return list(rows.all())

    async def due_lead(self, lead_id: int, now: datetime) -> Lead | None:
        """The lead, if it still waits in «новый» and its reminder is still due (re-checked in the job's
        own transaction: someone may have taken it since the list was read).

        Locked for this transaction, skipping a lead another instance's job holds: on PostgreSQL two
        instances ticking at once remind each lead once (SQLite's one writer serialises them anyway)."""
        return await self.session.scalar(
            select(Lead)
            .where(
                Lead.id == lead_id,
                Lead.status == LeadStatus.NEW,
                Lead.next_reminder_at <= now,
                Lead.deleted_at.is_(None),
            )
            .with_for_update(of=Lead, skip_locked=True)
        )

    async def snooze_lead(self, actor: Actor, lead_id: int, until: datetime) -> Lead:
        """Push a waiting lead's next reminder to ``until`` (whoever may update the lead)."""
        lead = await self.session.scalar(select(Lead).where(Lead.id == lead_id, Lead.deleted_at.is_(None)))
        if lead is None:
            raise NotFound("lead", lead_id)
        if not permissions.can_update(actor, lead):
            raise Forbidden("update")
        if lead.status != LeadStatus.NEW:
            raise InvalidInput("status", "reminder_not_new", "the lead is no longer new")
        lead.next_reminder_at = until
        return lead

    # ---- who hears -------------------------------------------------------------------------------------

    async def heads(self) -> list[User]:
        """The active ROPs; the active admins when the team has no ROP, so escalations reach someone."""
        for role in (Role.ROP, Role.ADMIN):
            rows = await self.session.scalars(
                select(User).where(User.is_active.is_(True), User.role == role).order_by(User.id)
            )
            found = list(rows.all())
            if found:
                return found
        return []

    async def active_user(self, user_id: int | None) -> User | None:
        if user_id is None:
            return None
        user = await self.session.get(User, user_id)
        return user if user is not None and user.is_active else None

    async def active_sellers(self) -> list[User]:
        rows = await self.session.scalars(
            select(User).where(User.is_active.is_(True), User.role == Role.SELLER).order_by(User.id)
        )
        return list(rows.all())

    async def users_by_id(self, ids: set[int]) -> dict[int, User]:
        if not ids:
            return {}
        rows = await self.session.scalars(select(User).where(User.id.in_(ids)))
        return {user.id: user for user in rows.all()}

    # ---- the digest --------------------------------------------------------------------------------------

    async def new_leads_of(self, user_id: int, *, limit: int) -> tuple[list[Lead], int]:
        stmt = select(Lead).where(
            Lead.assigned_to_id == user_id, Lead.status == LeadStatus.NEW, Lead.deleted_at.is_(None)
        )
        rows = list((await self.session.scalars(stmt.order_by(Lead.created_at, Lead.id).limit(limit))).all())
        total = int(await self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        return rows, total

    async def status_counts(self) -> dict[LeadStatus, int]:
        rows = await self.session.execute(
            select(Lead.status, func.count()).where(Lead.deleted_at.is_(None)).group_by(Lead.status)
        )
        return {LeadStatus(status): int(count) for status, count in rows.all()}

    async def unassigned_new(self) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).where(
                    Lead.status == LeadStatus.NEW, Lead.assigned_to_id.is_(None), Lead.deleted_at.is_(None)
                )
            )
            or 0
        )

    async def waiting_new_by_assignee(self, waiting_since: datetime) -> dict[int, int]:
        """users.id -> their leads still in «новый» created before ``waiting_since``."""
        rows = await self.session.execute(
            select(Lead.assigned_to_id, func.count())
            .where(
                Lead.status == LeadStatus.NEW,
                Lead.assigned_to_id.is_not(None),
                Lead.created_at < waiting_since,
                Lead.deleted_at.is_(None),
            )
            .group_by(Lead.assigned_to_id)
        )
        return {int(user_id): int(count) for user_id, count in rows.all() if user_id is not None}

    async def existing_keys(self, keys: list[str]) -> set[str]:
        """Which of these outbox keys are already queued (e.g. today's digests)."""
        if not keys:
            return set()
        rows = await self.session.scalars(
            select(OutboxMessage.idempotency_key).where(OutboxMessage.idempotency_key.in_(keys))
        )
        return set(rows.all())
