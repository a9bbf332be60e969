"""What the reports need of a lead's history and comments, kept on the lead itself, so that a period's
analytics (``db.analytics``) reads only ``leads`` rows, whatever the history holds.

The columns and their rules (docs/reports.md), each what a recomputation from the rows gives:

- ``assigned_at``: the time of the lead's latest ``assigned`` history row; None without one (the
  analytics then measures from its creation);
- ``first_response_at``: the earliest ``status_changed`` history row or comment by the lead's assignee
  now, at or after ``coalesce(assigned_at, created_at)``; None while unassigned or unanswered. A
  reassignment starts it again: only the new assignee's actions from then on count;
- ``ever_in_work``: a ``status_changed`` row to «в работе» is in its history (the analytics adds "or it
  is «в работе» or «закрыт» now", which the lead row has anyway).

``db.repositories.leads.LeadRepository`` keeps them in the same transaction as the rows it writes:

- a new lead gets them in its INSERT (assigned at its creation when it has an assignee; nothing else);
- a status change or comment by the assignee is ``note_answer``: one conditional UPDATE that takes the
  earlier of the stored answer and this one, checked against the row as it is when written (so a
  comment racing a reassignment or another answer on PostgreSQL cannot store a wrong one); a change to
  «в работе» sets ``ever_in_work``;
- an assignment (by hand, taken, automatic), which changes whose answer counts and from when, is
  ``refresh``: the lead recomputed from its rows.

Rows written around the repositories (the demo's seed, test fixtures, the benchmarks) are brought in
line with ``refresh``; migration 0008 filled the columns of existing databases by the same rules.
These writes are bookkeeping, like the reminder state: none of them moves ``updated_at`` (the changes
that cause them move it themselves).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from db.enums import HistoryAction, LeadStatus
from db.models import Comment, Lead, LeadHistory

# Leads per refresh statement (bound ids stay well within every database's limit).
REFRESH_BATCH = 500


def _assigned_at() -> Any:
    row = aliased(LeadHistory)
    return (
        select(func.max(row.changed_at))
        .where(row.lead_id == Lead.id, row.action == HistoryAction.ASSIGNED.value)
        .correlate(Lead)
        .scalar_subquery()
    )


def _first_response() -> ColumnElement[Any]:
    """The assignee's first status change or comment since the lead's last assignment (its creation
    without one), over the lead's rows; NULL when there is none or no assignee."""
    since = func.coalesce(_assigned_at(), Lead.created_at)
    row = aliased(LeadHistory)
    status = (
        select(func.min(row.changed_at))
        .where(
            row.lead_id == Lead.id,
            row.action == HistoryAction.STATUS_CHANGED.value,
            row.changed_by_id == Lead.assigned_to_id,
            row.changed_at >= since,
        )
        .correlate(Lead)
        .scalar_subquery()
    )
    comment = (
        select(func.min(Comment.created_at))
        .where(
            Comment.lead_id == Lead.id,
            Comment.created_by_id == Lead.assigned_to_id,
            Comment.created_at >= since,
        )
        .correlate(Lead)
        .scalar_subquery()
    )
    # The earlier of the two, either may be NULL (SQLite's min(a, b) and PostgreSQL's least() differ on NULL).
    return case((comment.is_(None), status), (status.is_(None), comment), (status <= comment, status), else_=comment)


def _ever_in_work() -> ColumnElement[bool]:
    row = aliased(LeadHistory)
    return (
        select(row.id)
        .where(
            row.lead_id == Lead.id,
            row.action == HistoryAction.STATUS_CHANGED.value,
            row.new_value == LeadStatus.IN_WORK.value,
        )
        .correlate(Lead)
        .exists()
    )


_FACTS = (Lead.assigned_at, Lead.first_response_at, Lead.ever_in_work)


def _sync(session: AsyncSession, rows: Iterable[Any], columns: tuple[Any, ...]) -> None:
    """Give leads loaded in the session the values just written (without marking them changed)."""
    for row in rows:
        lead = session.identity_map.get(identity_key(Lead, row[0]))
        if lead is not None:
            for column, value in zip(columns, row[1:], strict=True):
                set_committed_value(lead, column.key, value)


async def refresh(session: AsyncSession, lead_ids: Iterable[int] | None = None) -> None:
    """Recompute the facts of ``lead_ids`` from their history and comments; the leads among them loaded
    in the session show the new values. None: every lead, in one statement, loaded ones left as they are."""
    values = {"assigned_at": _assigned_at(), "first_response_at": _first_response(), "ever_in_work": _ever_in_work()}
    if lead_ids is None:
        await session.execute(update(Lead).values(values).execution_options(synchronize_session=False))
        return
    ids = list(lead_ids)
    for start in range(0, len(ids), REFRESH_BATCH):
        stmt = (
            update(Lead)
            .where(Lead.id.in_(ids[start : start + REFRESH_BATCH]))
            .values(values)
            .returning(Lead.id, *_FACTS)
            .execution_options(synchronize_session=False)
        )
        _sync(session, (await session.execute(stmt)).all(), _FACTS)


async def note_answer(session: AsyncSession, lead_id: int, who: int | None, at: datetime) -> None:
    """``who`` changed the lead's status or commented on it at ``at``: its first response, if ``who`` is
    its assignee, ``at`` is not before the assignment and nothing earlier is stored."""
    if who is None:
        return
    stmt = (
        update(Lead)
        .where(
            Lead.id == lead_id,
            Lead.assigned_to_id == who,
            func.coalesce(Lead.assigned_at, Lead.created_at) <= at,
            (Lead.first_response_at.is_(None)) | (Lead.first_response_at > at),
        )
        .values(first_response_at=at)
        .returning(Lead.id, Lead.first_response_at)
        .execution_options(synchronize_session=False)
    )
    _sync(session, (await session.execute(stmt)).all(), (Lead.first_response_at,))
