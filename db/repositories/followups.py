"""Follow-ups: a due time and a short text on a lead. Whoever may update the lead may set, complete and
snooze its follow-ups; the reminder jobs read the due and overdue ones from here as well."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import permissions
from db.enums import HistoryAction
from db.errors import Forbidden, InvalidInput, NotFound
from db.models import FollowUp, Lead, LeadHistory, utcnow
from db.permissions import Actor
from db.validation import clean_text

MAX_FOLLOWUP_TEXT = 500


@dataclass(slots=True)
class FollowUpItem:
    followup: FollowUp
    lead: Lead


def responsible_id(followup: FollowUp, lead: Lead) -> int:
    """Who a follow-up is for: the lead's salesperson, or whoever set it while the lead is unassigned."""
    return lead.assigned_to_id if lead.assigned_to_id is not None else followup.created_by_id


def _responsible_is(user_id: int) -> ColumnElement[bool]:
    return or_(
        Lead.assigned_to_id == user_id,
        and_(Lead.assigned_to_id.is_(None), FollowUp.created_by_id == user_id),
    )


# A card's open follow-ups, soonest first, with how many there are (built once: the card runs it each time).


class FollowUpRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---- the people's side ---------------------------------------------------------------------------

    async def lead_for_followup(self, actor: Actor, lead_id: int) -> Lead:
        """The live lead, if ``actor`` may set follow-ups on it (i.e. may update it)."""
        lead = await self.session.scalar(select(Lead).where(Lead.id == lead_id, Lead.deleted_at.is_(None)))
        if lead is None:
            raise NotFound("lead", lead_id)
        if not permissions.can_update(actor, lead):
            raise Forbidden("update")
        return lead

    async def create(
        self, actor: Actor, lead_id: int, due_at: datetime, text: str, *, now: datetime | None = None
    ) -> FollowUpItem:
        now = now or utcnow()
        lead = await self.lead_for_followup(actor, lead_id)
        body = clean_text(text, "text", MAX_FOLLOWUP_TEXT)
        assert body is not None
        if due_at <= now:
            raise InvalidInput("due_at", "due_past", "the due time is in the past")
        followup = FollowUp(lead_id=lead.id, text=body, due_at=due_at, created_by_id=actor.id, created_at=now)
        self.session.add(followup)
        self._history(lead, actor, HistoryAction.FOLLOWUP_SET, followup, now)
        await self.session.flush()
        return FollowUpItem(followup=followup, lead=lead)

    async def _load(self, followup_id: int) -> FollowUpItem:
        row = (
            await self.session.execute(
                select(FollowUp, Lead)
                .join(Lead, Lead.id == FollowUp.lead_id)
                .where(FollowUp.id == followup_id, Lead.deleted_at.is_(None))
            )
        ).first()
        if row is None:
            raise NotFound("followup", followup_id)
        return FollowUpItem(followup=row[0], lead=row[1])

    async def _for_update(self, actor: Actor, followup_id: int) -> FollowUpItem:
        item = await self._load(followup_id)
        if not permissions.can_update(actor, item.lead):
            raise Forbidden("update")
        return item

    async def complete(
        self, actor: Actor, followup_id: int, *, now: datetime | None = None
    ) -> tuple[FollowUpItem, bool]:
        """Mark done; returns the follow-up and whether this call did it (a second press changes nothing)."""
        now = now or utcnow()
        item = await self._for_update(actor, followup_id)
        if item.followup.done_at is not None:
            return item, False
        item.followup.done_at = now
        self._history(item.lead, actor, HistoryAction.FOLLOWUP_DONE, item.followup, now)
        return item, True

    async def snooze(
        self, actor: Actor, followup_id: int, until: datetime, *, now: datetime | None = None
    ) -> FollowUpItem:
        """Move the due time; the assignee is reminded again at the new time (the ROPs only ever once)."""
        now = now or utcnow()
        item = await self._for_update(actor, followup_id)
        if item.followup.done_at is not None:
            raise InvalidInput("followup", "followup_done", "the follow-up is already done")
        if until <= now:
            raise InvalidInput("due_at", "due_past", "the due time is in the past")
        item.followup.due_at = until
        item.followup.reminded_at = None
        return item

    def _history(self, lead: Lead, actor: Actor, action: HistoryAction, followup: FollowUp, now: datetime) -> None:
        self.session.add(
            LeadHistory(
                lead_id=lead.id,
                action=action.value,
                field="followup",
                old_value=followup.due_at.isoformat(),
                new_value=followup.text,
                changed_by_id=actor.id,
                changed_at=now,
            )
        )
        lead.updated_at = now

    def _open(self) -> Any:  # Select of (FollowUp, Lead); its generic form differs between SQLAlchemy 2.0 and 2.1
        return (
            select(FollowUp, Lead)
            .join(Lead, Lead.id == FollowUp.lead_id)
            .where(FollowUp.done_at.is_(None), Lead.deleted_at.is_(None))
        )

    async def open_for(self, actor: Actor, *, limit: int) -> tuple[list[FollowUpItem], int]:
        """``actor``'s open follow-ups, soonest first, and how many there are in all.

        Theirs: on their leads, on unassigned leads they set; a manager also sees the ones they set on
        someone else's lead (the salesperson is reminded, the manager keeps track).
        """
        condition = _responsible_is(actor.id)
        if actor.role in permissions.MANAGERS:
            condition = or_(condition, FollowUp.created_by_id == actor.id)
        stmt = self._open().where(condition)
        rows = (await self.session.execute(stmt.order_by(FollowUp.due_at, FollowUp.id).limit(limit))).all()
        items = [FollowUpItem(followup=f, lead=lead) for f, lead in rows]
        total = len(items)
        if total == limit:
            total = int(await self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        return items, total

    async def open_for_lead(self, actor: Actor, lead_id: int, *, limit: int = 5) -> list[FollowUp]:
        """Open follow-ups of one lead for its card (anyone who may view the lead)."""
        lead = await self.session.scalar(select(Lead).where(Lead.id == lead_id, Lead.deleted_at.is_(None)))
        if lead is None:
            raise NotFound("lead", lead_id)
        if not permissions.can_view(actor, lead):
            raise Forbidden("view")
        rows = await self.session.scalars(
            select(FollowUp)
            .where(FollowUp.lead_id == lead_id, FollowUp.done_at.is_(None))
            .order_by(FollowUp.due_at, FollowUp.id)
            .limit(limit)
        )
        return list(rows.all())

    # ---- the jobs' side (the system acts; no actor) ------------------------------------------------------

    async def due_unreminded(self, now: datetime, *, limit: int) -> list[int]:
        """Open follow-ups whose time has come and whose assignee was not reminded yet (ix_followups_open_due)."""
        rows = await self.session.scalars(
            self._open()
            .with_only_columns(FollowUp.id)
            .where(FollowUp.due_at <= now, FollowUp.reminded_at.is_(None))
            .order_by(FollowUp.due_at, FollowUp.id)
            .limit(limit)
        )
        return list(rows.all())

    async def overdue_unescalated(self, cutoff: datetime, *, limit: int) -> list[int]:
        """Open follow-ups due before ``cutoff`` that the ROPs have not been told about."""
        rows = await self.session.scalars(
            self._open()
            .with_only_columns(FollowUp.id)
            .where(FollowUp.due_at <= cutoff, FollowUp.escalated_at.is_(None))
            .order_by(FollowUp.due_at, FollowUp.id)
            .limit(limit)
        )
        return list(rows.all())

    async def load(self, followup_id: int) -> FollowUpItem | None:
        try:
            return await self._load(followup_id)
        except NotFound:
            return None

    async def open_of(
        self, user_id: int, *, due_before: datetime, due_from: datetime | None = None, limit: int
    ) -> tuple[list[FollowUpItem], int]:
        """Open follow-ups someone is responsible for, due in ``[due_from, due_before)`` (the digest), and
        how many there are in all."""
        stmt = self._open().where(_responsible_is(user_id), FollowUp.due_at < due_before)
        if due_from is not None:
            stmt = stmt.where(FollowUp.due_at >= due_from)
        rows = (await self.session.execute(stmt.order_by(FollowUp.due_at, FollowUp.id).limit(limit))).all()
        total = int(await self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
        return [FollowUpItem(followup=f, lead=lead) for f, lead in rows], total

    async def overdue_by_person(self, now: datetime) -> dict[int, int]:
        """users.id -> number of open follow-ups past due they are responsible for."""
        who = func.coalesce(Lead.assigned_to_id, FollowUp.created_by_id)
        rows = await self.session.execute(
            self._open().with_only_columns(who, func.count()).where(FollowUp.due_at < now).group_by(who)
        )
        return {int(user_id): int(count) for user_id, count in rows.all()}
