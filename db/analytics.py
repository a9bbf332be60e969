"""Sales analytics for a period of lead creation: the funnel by source, the salespeople, refusal reasons,
weekly cohorts and leads per day. Pure reads, in a unit of work opened for reading.

What is counted (the same for the bot, the HTTP API, the exports and the PDF):

- the leads **created** in ``[start, end)`` that are not deleted; a salesperson sees only the leads
  assigned to them now, everybody else allowed (``db.permissions.can_view_analytics``) sees the team's;
- **taken into work**: the lead has been «в работе» at some point (a status change to it in its history,
  or it is «в работе» or «закрыт» now); **closed** and **refused**: the lead's status now;
- **conversion** = closed ÷ created, **refusal rate** = refused ÷ created (None when nothing was created);
- per salesperson (the lead's assignee now): leads assigned, closed, refused, still «новый», and the
  **time to first response**: from the lead's last assignment (its latest ``assigned`` history row; its
  creation when it has none) to the assignee's first status change or comment at or after that moment.
  Leads without such an action yet are counted as ``unanswered``; median and 90th percentile (linear
  interpolation between the closest ranks, ``percentile``) are taken over the answered ones;
- refusal reasons grouped by their text with case and spaces folded, most frequent first;
- weekly cohorts: leads created in each week (Monday to Sunday, in the CRM's time zone) and how many of
  them are closed by now; leads per day, in the CRM's time zone.

One statement reads one row per lead of the period, from ``leads`` alone: the lead's assignment time,
first response and whether it was ever «в работе» are kept on it as its history grows (``db.lead_facts``,
by the same rules); the figures are summed up from those rows.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from db import permissions
from db.enums import LeadStatus
from db.errors import Forbidden, InvalidInput
from db.models import Lead, User, person_name
from db.permissions import Actor
from db.settings import CrmSection

# The longest period one request may cover: a wider one is refused rather than read row by row.
MAX_PERIOD_DAYS = 731
# Dates outside these years are refused (their midnights need not even exist as datetimes).
MIN_YEAR, MAX_YEAR = 1970, 9000


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The ``fraction`` quantile of ``values`` by linear interpolation between the closest ranks
    (numpy's default, ``statistics.quantiles(method="inclusive")``); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def fold_reason(text: str) -> str:
    """A refusal reason as grouped: spaces collapsed, case folded."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True, slots=True)
class Period:
    """Days ``first`` to ``last`` (both included) in the CRM's time zone."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.first.year < MIN_YEAR or self.last.year > MAX_YEAR:
            raise InvalidInput("period", "period_out_of_range", f"a period lies within {MIN_YEAR}..{MAX_YEAR}")
        if self.last < self.first:
            raise InvalidInput("period", "period_reversed", "the period ends before it starts")
        if (self.last - self.first).days + 1 > MAX_PERIOD_DAYS:
            raise InvalidInput("period", "period_too_long", f"a period may cover at most {MAX_PERIOD_DAYS} days")

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """``[start, end)`` in UTC: the first day's midnight to the midnight after the last day."""
        start = datetime.combine(self.first, time(0), tz).astimezone(UTC)
        end = datetime.combine(self.last + timedelta(days=1), time(0), tz).astimezone(UTC)
        return start, end

    @staticmethod
    def today(today: date) -> Period:
        return Period(today, today)

    @staticmethod
    def last_days(today: date, days: int) -> Period:
        """The last ``days`` days, today included."""
        return Period(today - timedelta(days=days - 1), today)

    @staticmethod
    def this_month(today: date) -> Period:
        return Period(today.replace(day=1), today)


@dataclass(slots=True)
class SourceFunnel:
    source: str
    created: int = 0
    in_work: int = 0
    closed: int = 0
    refused: int = 0

    @property
    def conversion(self) -> float | None:
        return rate(self.closed, self.created)

    @property
    def refusal_rate(self) -> float | None:
        return rate(self.refused, self.created)


@dataclass(slots=True)
class SellerStats:
    user_id: int
    name: str
    assigned: int = 0
    closed: int = 0
    refused: int = 0
    waiting: int = 0  # still «новый»
    unanswered: int = 0  # no status change or comment by them since the assignment
    response_seconds: list[float] = field(default_factory=list, repr=False)

    @property
    def conversion(self) -> float | None:
        return rate(self.closed, self.assigned)

    @property
    def answered(self) -> int:
        return len(self.response_seconds)

    @property
    def median_response(self) -> timedelta | None:
        value = percentile(self.response_seconds, 0.5)
        return None if value is None else timedelta(seconds=value)

    @property
    def p90_response(self) -> timedelta | None:
        value = percentile(self.response_seconds, 0.9)
        return None if value is None else timedelta(seconds=value)


@dataclass(frozen=True, slots=True)
class ReasonCount:
    reason: str  # the most frequent spelling of the group (spaces collapsed)
    count: int


@dataclass(frozen=True, slots=True)
class Cohort:
    week_start: date  # a Monday
    created: int
    closed: int

    @property
    def conversion(self) -> float | None:
        return rate(self.closed, self.created)


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    created: int


@dataclass(slots=True)
class Summary:
    period: Period
    timezone: str
    own_only: bool  # a salesperson's own leads, not the team's
    total: SourceFunnel
    sources: list[SourceFunnel]
    sellers: list[SellerStats]
    unassigned: int
    reasons: list[ReasonCount]
    cohorts: list[Cohort]
    daily: list[DayCount]


@dataclass(frozen=True, slots=True)
class _LeadFacts:
    source: str
    status: LeadStatus
    assigned_to_id: int | None
    created_at: datetime
    refusal_reason: str | None
    was_in_work: bool
    assigned_at: datetime | None
    first_response_at: datetime | None


def _lead_facts_query(start: datetime, end: datetime, seller_id: int | None) -> Any:
    """One row per lead of the period, from ``leads`` alone: what its history holds for the figures is
    kept on the lead (``db.lead_facts``)."""
    was_in_work = or_(Lead.status.in_([LeadStatus.IN_WORK.value, LeadStatus.CLOSED.value]), Lead.ever_in_work)
    stmt = select(
        Lead.source,
        Lead.status,
        Lead.assigned_to_id,
        Lead.created_at,
        Lead.refusal_reason,
        was_in_work,
        Lead.assigned_at,
        Lead.first_response_at,
    ).where(Lead.deleted_at.is_(None), Lead.created_at >= start, Lead.created_at < end)
    if seller_id is not None:
        stmt = stmt.where(Lead.assigned_to_id == seller_id)
    return stmt


def _aware(value: Any) -> datetime | None:
    """A timestamp as read: the column's type makes it aware already, but be explicit."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Rows per partition the period's leads are streamed in.
STREAM_PARTITION = 1000


def analytics_scope(actor: Actor) -> int | None:
    """Whose leads ``actor``'s analytics cover: None for the team's, else their own id."""
    if not permissions.can_view_analytics(actor):
        raise Forbidden("analytics")
    return None if permissions.can_view_all(actor) else actor.id


class AnalyticsRepository:
    def __init__(self, session: AsyncSession, crm: CrmSection) -> None:
        self.session = session
        self.crm = crm

    async def summary(self, actor: Actor, period: Period) -> Summary:
        scope = analytics_scope(actor)
        tz = self.crm.tz
        start, end = period.bounds(tz)
        tally = Tally(period, tz)
        # Into the tally a partition at a time: memory holds the figures and one partition, not the period's
        # leads; partitions, not single rows, so the driver is awaited once per STREAM_PARTITION rows.
        query = _lead_facts_query(start, end, scope).execution_options(yield_per=STREAM_PARTITION)
        result = await self.session.stream(query)
        async for partition in result.partitions():
            for row in partition:
                self._add(tally, row)
        names: dict[int, str] = {}
        if tally.sellers:
            rows = await self.session.execute(
                select(User.id, User.first_name, User.last_name).where(User.id.in_(list(tally.sellers)))
            )
            names = {user_id: person_name(first, last, user_id) for user_id, first, last in rows}
        return tally.summary(names, own_only=scope is not None, timezone=self.crm.timezone)

    @staticmethod
    def _add(tally: Tally, row: Any) -> None:
        tally.add(
            _LeadFacts(
                source=row[0],
                status=LeadStatus(row[1]),
                assigned_to_id=row[2],
                created_at=row[3],
                refusal_reason=row[4],
                was_in_work=bool(row[5]),
                assigned_at=_aware(row[6]),
                first_response_at=_aware(row[7]),
            )
        )


class Tally:
    """The figures of a period, summed up lead by lead."""

    def __init__(self, period: Period, tz: ZoneInfo) -> None:
        self.period = period
        self.tz = tz
        self.total = SourceFunnel(source="")
        self.sources: dict[str, SourceFunnel] = {}
        self.sellers: dict[int, SellerStats] = {}
        self.unassigned = 0
        self.reasons: dict[str, Counter[str]] = defaultdict(Counter)
        self.cohorts: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        self.daily: Counter[date] = Counter()

    def add(self, lead: _LeadFacts) -> None:
        closed = lead.status == LeadStatus.CLOSED
        refused = lead.status == LeadStatus.REFUSED
        funnel = self.sources.get(lead.source)
        if funnel is None:
            funnel = self.sources[lead.source] = SourceFunnel(source=lead.source)
        for each in (self.total, funnel):
            each.created += 1
            each.in_work += lead.was_in_work
            each.closed += closed
            each.refused += refused
        if lead.assigned_to_id is None:
            self.unassigned += 1
        else:
            seller = self.sellers.get(lead.assigned_to_id)
            if seller is None:
                seller = self.sellers[lead.assigned_to_id] = SellerStats(user_id=lead.assigned_to_id, name="")
            seller.assigned += 1
            seller.closed += closed
            seller.refused += refused
            seller.waiting += lead.status == LeadStatus.NEW
            if lead.first_response_at is not None:
                since = lead.assigned_at or lead.created_at
                seller.response_seconds.append((lead.first_response_at - since).total_seconds())
            else:
                seller.unanswered += 1
        if refused and lead.refusal_reason and lead.refusal_reason.strip():
            spelled = " ".join(lead.refusal_reason.split())
            self.reasons[fold_reason(spelled)][spelled] += 1
        local_day = lead.created_at.astimezone(self.tz).date()
        self.daily[local_day] += 1
        cohort = self.cohorts[local_day - timedelta(days=local_day.weekday())]
        cohort[0] += 1
        cohort[1] += closed

    def summary(self, names: dict[int, str], *, own_only: bool, timezone: str) -> Summary:
        for user_id, seller in self.sellers.items():
            seller.name = names.get(user_id, f"#{user_id}")
        grouped = [
            ReasonCount(reason=spellings.most_common(1)[0][0], count=sum(spellings.values()))
            for spellings in self.reasons.values()
        ]
        grouped.sort(key=lambda r: (-r.count, r.reason.casefold()))
        first = self.period.first
        return Summary(
            period=self.period,
            timezone=timezone,
            own_only=own_only,
            total=self.total,
            sources=sorted(self.sources.values(), key=lambda s: (-s.created, s.source.casefold())),
            sellers=sorted(self.sellers.values(), key=lambda s: (-s.assigned, s.name.casefold(), s.user_id)),
            unassigned=self.unassigned,
            reasons=grouped,
            cohorts=[Cohort(week, counts[0], counts[1]) for week, counts in sorted(self.cohorts.items())],
            daily=[
                DayCount(first + timedelta(days=i), self.daily.get(first + timedelta(days=i), 0))
                for i in range(self.period.days)
            ],
        )
