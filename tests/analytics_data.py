"""A generated history of leads for the analytics tests, and the figures counted by hand from it.

Each lead's life is simulated step by step (assignments, status changes with reopenings, comments,
deletions); the rows are written with their own timestamps, and the expected answers are counted from
the simulation, not from the database, with the plainest code possible.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from db import lead_facts
from db.enums import HistoryAction, LeadStatus
from db.models import Comment, Lead, LeadHistory
from db.uow import UnitOfWorkFactory

TZ = ZoneInfo("Asia/Tashkent")
SOURCES = ["Instagram", "Facebook", "Google Ads", "Рекомендация", "Сайт"]
REASONS = [
    "Дорого",
    "  дорого ",
    "ДОРОГО",
    "Не берёт трубку",
    "не  берёт   трубку",
    "Купил у конкурентов",
    "<b>Спам</b>",
]
# Lead creation spreads over these days; the tests' periods cut into them.
FIRST_DAY = date(2026, 10, 20)
DAYS = 45


@dataclass
class SimLead:
    source: str
    created_at: datetime
    status: LeadStatus = LeadStatus.NEW
    assignee: int | None = None
    last_assigned_at: datetime | None = None
    ever_in_work: bool = False
    refusal_reason: str | None = None
    deleted: bool = False
    # (moment, kind, who): kind is "status" or "comment"
    actions: list[tuple[datetime, str, int]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)

    def local_day(self) -> date:
        return self.created_at.astimezone(TZ).date()

    def first_response(self) -> timedelta | None:
        if self.assignee is None:
            return None
        since = self.last_assigned_at or self.created_at
        moments = [at for at, _kind, who in self.actions if who == self.assignee and at >= since]
        return min(moments) - since if moments else None


def simulate(seed: int, count: int, sellers: list[int], heads: list[int]) -> list[SimLead]:
    rnd = random.Random(seed)
    leads: list[SimLead] = []
    start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=TZ).astimezone(UTC)
    for _ in range(count):
        created = start + timedelta(seconds=rnd.randrange(DAYS * 86400))
        lead = SimLead(source=rnd.choice(SOURCES), created_at=created)
        head = rnd.choice(heads)
        lead.history.append(_row(HistoryAction.CREATED, head, created, new=LeadStatus.NEW.value))
        at = created
        if rnd.random() < 0.4:
            lead.assignee = rnd.choice(sellers)
            lead.last_assigned_at = created
            lead.history.append(_row(HistoryAction.ASSIGNED, head, created, new=f"seller {lead.assignee}"))
        for _step in range(rnd.randrange(8)):
            at += timedelta(seconds=rnd.randrange(60, 36 * 3600))
            choice = rnd.random()
            if choice < 0.25:
                others = [s for s in sellers if s != lead.assignee]
                lead.assignee = rnd.choice(others)
                lead.last_assigned_at = at
                lead.history.append(_row(HistoryAction.ASSIGNED, rnd.choice(heads), at, new=f"seller {lead.assignee}"))
            elif choice < 0.45:
                who = rnd.choice([*sellers, *heads])
                lead.comments.append({"text": "звонил", "created_by_id": who, "created_at": at})
                lead.actions.append((at, "comment", who))
            elif choice < 0.55:
                lead.history.append(
                    _row(HistoryAction.UPDATED, lead.assignee or head, at, old="1", new="2", field_name="notes")
                )
            else:
                moves = {
                    LeadStatus.NEW: [LeadStatus.IN_WORK, LeadStatus.IN_WORK, LeadStatus.REFUSED],
                    LeadStatus.IN_WORK: [LeadStatus.CLOSED, LeadStatus.REFUSED],
                    LeadStatus.CLOSED: [LeadStatus.IN_WORK],  # reopened
                    LeadStatus.REFUSED: [LeadStatus.NEW, LeadStatus.IN_WORK],  # reopened
                }[lead.status]
                new = rnd.choice(moves)
                who = lead.assignee if lead.assignee is not None and rnd.random() < 0.7 else rnd.choice(heads)
                lead.history.append(_row(HistoryAction.STATUS_CHANGED, who, at, old=lead.status.value, new=new.value))
                lead.actions.append((at, "status", who))
                lead.refusal_reason = rnd.choice(REASONS) if new == LeadStatus.REFUSED else None
                lead.status = new
                lead.ever_in_work = lead.ever_in_work or new == LeadStatus.IN_WORK
        if rnd.random() < 0.08:
            lead.deleted = True
        leads.append(lead)
    return leads


def _row(
    action: HistoryAction,
    who: int,
    at: datetime,
    *,
    old: str | None = None,
    new: str | None = None,
    field_name: str | None = None,
) -> dict[str, Any]:
    return {
        "action": action.value,
        "changed_by_id": who,
        "changed_at": at,
        "old_value": old,
        "new_value": new,
        "field": field_name,
    }


async def store(uow_factory: UnitOfWorkFactory, leads: list[SimLead], created_by: int) -> None:
    """The simulated leads, their history and comments, written as rows; then their report facts
    (``db.lead_facts``) recomputed from those rows, as for any rows written around the repositories."""
    async with uow_factory() as uow:
        ids: list[int] = []
        for index, sim in enumerate(leads):
            lead = Lead(
                client_name=f"Клиент {index}",
                phone_number=f"+99890{index:07d}",
                source=sim.source,
                status=sim.status,
                assigned_to_id=sim.assignee,
                created_by_id=created_by,
                created_at=sim.created_at,
                updated_at=sim.created_at,
                refusal_reason=sim.refusal_reason,
                deleted_at=sim.created_at + timedelta(days=1) if sim.deleted else None,
                budget=1000.0 + index,
            )
            uow.session.add(lead)
            await uow.session.flush()
            ids.append(lead.id)
            uow.session.add_all(LeadHistory(lead_id=lead.id, **row) for row in sim.history)
            uow.session.add_all(Comment(lead_id=lead.id, **row) for row in sim.comments)
        await lead_facts.refresh(uow.session, ids)
        await uow.commit()


def in_period(leads: list[SimLead], first: date, last: date, seller: int | None = None) -> list[SimLead]:
    return [
        lead
        for lead in leads
        if not lead.deleted and first <= lead.local_day() <= last and (seller is None or lead.assignee == seller)
    ]


def expected_sources(leads: list[SimLead]) -> dict[str, tuple[int, int, int, int]]:
    """source -> (created, taken into work, closed, refused)"""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for lead in leads:
        counts = out[lead.source]
        counts[0] += 1
        counts[1] += lead.ever_in_work or lead.status in (LeadStatus.IN_WORK, LeadStatus.CLOSED)
        counts[2] += lead.status == LeadStatus.CLOSED
        counts[3] += lead.status == LeadStatus.REFUSED
    return {source: (c[0], c[1], c[2], c[3]) for source, c in out.items()}


def expected_sellers(leads: list[SimLead]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for lead in leads:
        if lead.assignee is None:
            continue
        row = out.setdefault(
            lead.assignee, {"assigned": 0, "closed": 0, "refused": 0, "waiting": 0, "unanswered": 0, "times": []}
        )
        row["assigned"] += 1
        row["closed"] += lead.status == LeadStatus.CLOSED
        row["refused"] += lead.status == LeadStatus.REFUSED
        row["waiting"] += lead.status == LeadStatus.NEW
        response = lead.first_response()
        if response is None:
            row["unanswered"] += 1
        else:
            row["times"].append(response.total_seconds())
    for row in out.values():
        times = row["times"]
        row["median"] = statistics.median(times) if times else None
        if len(times) >= 2:
            row["p90"] = statistics.quantiles(times, n=10, method="inclusive")[8]
        else:
            row["p90"] = times[0] if times else None
    return out


def expected_reasons(leads: list[SimLead]) -> Counter[str]:
    return Counter(
        " ".join(lead.refusal_reason.split()).lower()
        for lead in leads
        if lead.status == LeadStatus.REFUSED and lead.refusal_reason
    )


def expected_cohorts(leads: list[SimLead]) -> dict[date, tuple[int, int]]:
    out: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for lead in leads:
        day = lead.local_day()
        monday = day - timedelta(days=day.weekday())
        out[monday][0] += 1
        out[monday][1] += lead.status == LeadStatus.CLOSED
    return {week: (c[0], c[1]) for week, c in out.items()}
