"""The answers of the analytics endpoints (``api.routes.analytics``): ``db.analytics.Summary`` as JSON."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from db.analytics import Cohort, SellerStats, SourceFunnel, Summary


class FunnelOut(BaseModel):
    source: str = Field(description="The source; empty in `total`", examples=["Instagram"])
    created: int = Field(description="Leads created in the period (deleted ones excluded)")
    in_work: int = Field(description="Of them, taken into work at some point («в работе»)")
    closed: int = Field(description="Of them, «закрыт» now")
    refused: int = Field(description="Of them, «отказ» now")
    conversion: float | None = Field(description="closed ÷ created; null when nothing was created")
    refusal_rate: float | None = Field(description="refused ÷ created; null when nothing was created")

    @classmethod
    def of(cls, funnel: SourceFunnel) -> FunnelOut:
        return cls(
            source=funnel.source,
            created=funnel.created,
            in_work=funnel.in_work,
            closed=funnel.closed,
            refused=funnel.refused,
            conversion=funnel.conversion,
            refusal_rate=funnel.refusal_rate,
        )


class SellerOut(BaseModel):
    user_id: int
    name: str = Field(examples=["Продажник Иванов"])
    assigned: int = Field(description="The period's leads assigned to them now")
    closed: int
    refused: int
    waiting: int = Field(description="Still «новый»")
    conversion: float | None = Field(description="closed ÷ assigned")
    answered: int = Field(description="Leads they acted on (a status change or a comment) since the assignment")
    unanswered: int = Field(description="Leads without such an action yet")
    median_response_seconds: float | None = Field(description="Median time from assignment to first response")
    p90_response_seconds: float | None = Field(description="90th percentile of the same (linear interpolation)")

    @classmethod
    def of(cls, seller: SellerStats) -> SellerOut:
        median, p90 = seller.median_response, seller.p90_response
        return cls(
            user_id=seller.user_id,
            name=seller.name,
            assigned=seller.assigned,
            closed=seller.closed,
            refused=seller.refused,
            waiting=seller.waiting,
            conversion=seller.conversion,
            answered=seller.answered,
            unanswered=seller.unanswered,
            median_response_seconds=None if median is None else median.total_seconds(),
            p90_response_seconds=None if p90 is None else p90.total_seconds(),
        )


class ReasonOut(BaseModel):
    reason: str = Field(description="The most frequent spelling among texts equal but for case and spaces")
    count: int


class CohortOut(BaseModel):
    week_start: date = Field(description="The Monday of the week the leads were created in (CRM time zone)")
    created: int
    closed: int = Field(description="Of them, «закрыт» now")
    conversion: float | None

    @classmethod
    def of(cls, cohort: Cohort) -> CohortOut:
        return cls(
            week_start=cohort.week_start, created=cohort.created, closed=cohort.closed, conversion=cohort.conversion
        )


class DayOut(BaseModel):
    day: date
    created: int


class PeriodOut(BaseModel):
    from_: date = Field(alias="from", serialization_alias="from", description="First day, included")
    to: date = Field(description="Last day, included")
    timezone: str = Field(description="The CRM's time zone the days are counted in", examples=["Asia/Tashkent"])


class AnalyticsSummaryOut(BaseModel):
    """The period's analytics: the team's for heads, МОП and the financier; a salesperson's own leads."""

    period: PeriodOut
    own_only: bool = Field(description="True when only the caller's own leads are counted (a salesperson)")
    total: FunnelOut
    sources: list[FunnelOut] = Field(description="Most created first")
    sellers: list[SellerOut] = Field(description="By the salesperson the lead is assigned to now")
    unassigned: int = Field(description="The period's leads with no salesperson")
    refusal_reasons: list[ReasonOut] = Field(description="Most frequent first")
    cohorts: list[CohortOut] = Field(description="Weekly cohorts of the period's leads")
    daily: list[DayOut] = Field(description="Leads created per day, every day of the period")

    @classmethod
    def of(cls, summary: Summary) -> AnalyticsSummaryOut:
        return cls(
            period=PeriodOut.model_validate(
                {"from": summary.period.first, "to": summary.period.last, "timezone": summary.timezone}
            ),
            own_only=summary.own_only,
            total=FunnelOut.of(summary.total),
            sources=[FunnelOut.of(s) for s in summary.sources],
            sellers=[SellerOut.of(s) for s in summary.sellers],
            unassigned=summary.unassigned,
            refusal_reasons=[ReasonOut(reason=r.reason, count=r.count) for r in summary.reasons],
            cohorts=[CohortOut.of(c) for c in summary.cohorts],
            daily=[DayOut(day=d.day, created=d.created) for d in summary.daily],
        )
