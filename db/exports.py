"""The leads an export writes, read in batches by keyset on id (newest first): however many leads the
caller may see, only one batch is in memory at a time. Pure reads, with the list's permissions and filters
(``LeadRepository.visible``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db.enums import LeadStatus
from db.models import Lead, User, person_name
from db.permissions import Actor
from db.repositories.leads import LeadFilter, LeadRepository

EXPORT_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ExportRow:
    id: int
    client_name: str
    phone_number: str
    status: LeadStatus
    source: str
    budget: float | None
    notes: str | None
    assigned_to_id: int | None
    assignee_name: str | None
    created_by_name: str
    created_at: datetime
    updated_at: datetime
    closing_date: date | None
    refusal_reason: str | None
    deleted_at: datetime | None = None


_ASSIGNEE = aliased(User, name="export_assignee")
_CREATOR = aliased(User, name="export_creator")
_COLUMNS = (
    Lead.id,
    Lead.client_name,
    Lead.phone_number,
    Lead.status,
    Lead.source,
    Lead.budget,
    Lead.notes,
    Lead.assigned_to_id,
    _ASSIGNEE.first_name,
    _ASSIGNEE.last_name,
    Lead.created_by_id,
    _CREATOR.first_name,
    _CREATOR.last_name,
    Lead.created_at,
    Lead.updated_at,
    Lead.closing_date,
    Lead.refusal_reason,
    Lead.deleted_at,
)


def _row(values: Sequence[Any]) -> ExportRow:
    lead_id, client_name, phone, status, source, budget, notes, assigned_to_id = values[:8]
    assignee_first, assignee_last, creator_id, creator_first, creator_last = values[8:13]
    created_at, updated_at, closing_date, refusal_reason, deleted_at = values[13:]
    return ExportRow(
        id=lead_id,
        client_name=client_name,
        phone_number=phone,
        status=LeadStatus(status),
        source=source,
        budget=budget,
        notes=notes,
        assigned_to_id=assigned_to_id,
        assignee_name=None if assigned_to_id is None else person_name(assignee_first, assignee_last, assigned_to_id),
        created_by_name=person_name(creator_first, creator_last, creator_id),
        created_at=created_at,
        updated_at=updated_at,
        closing_date=closing_date,
        refusal_reason=refusal_reason,
        deleted_at=deleted_at,
    )


async def export_batches(
    session: AsyncSession, leads: LeadRepository, actor: Actor, flt: LeadFilter, *, size: int = EXPORT_BATCH
) -> AsyncIterator[list[ExportRow]]:
    """The leads ``actor`` may list under ``flt``, newest first, ``size`` at a time (Forbidden as the list)."""
    base = (
        leads.visible(actor, flt)
        .with_only_columns(*_COLUMNS, maintain_column_froms=False)
        .select_from(Lead)
        .outerjoin(_ASSIGNEE, Lead.assigned_to_id == _ASSIGNEE.id)
        .join(_CREATOR, Lead.created_by_id == _CREATOR.id)
        .order_by(Lead.id.desc())
        .limit(size)
    )
    before: int | None = None
    while True:
        stmt = base if before is None else base.where(Lead.id < before)
        rows = [_row(values) for values in (await session.execute(stmt)).all()]
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        before = rows[-1].id


Cursor = tuple[datetime, int]  # (updated_at, id) of the last lead handed on


async def changed_since(session: AsyncSession, after: Cursor | None, until: datetime, limit: int) -> list[ExportRow]:
    """Leads changed after ``after`` and at or before ``until``, deleted ones included (their
    ``deleted_at`` set), oldest change first: what a sync hands on next. System work: no actor.

    Every change to a lead moves its ``updated_at`` (``db.models.Lead``), so walking (updated_at, id)
    forward misses none; ``until`` lies a little in the past, so a change still being committed (its
    ``updated_at`` taken earlier) is not jumped over."""
    stmt = (
        select(*_COLUMNS)
        .select_from(Lead)
        .outerjoin(_ASSIGNEE, Lead.assigned_to_id == _ASSIGNEE.id)
        .join(_CREATOR, Lead.created_by_id == _CREATOR.id)
        .where(Lead.updated_at <= until)
        .order_by(Lead.updated_at, Lead.id)
        .limit(limit)
    )
    if after is not None:
        moment, lead_id = after
        stmt = stmt.where(or_(Lead.updated_at > moment, and_(Lead.updated_at == moment, Lead.id > lead_id)))
    return [_row(values) for values in (await session.execute(stmt)).all()]
