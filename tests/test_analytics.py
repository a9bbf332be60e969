"""db.analytics against a generated history (reassigned, reopened, deleted leads), counted by hand."""

from __future__ import annotations

import statistics
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from db.analytics import MAX_PERIOD_DAYS, Period, Summary, percentile
from db.errors import Forbidden, InvalidInput
from db.permissions import Actor
from db.uow import UnitOfWorkFactory
from tests.analytics_data import (
    FIRST_DAY,
    SimLead,
    expected_cohorts,
    expected_reasons,
    expected_sellers,
    expected_sources,
    in_period,
    simulate,
    store,
)
from tests.conftest import Team

PERIOD = Period(date(2026, 10, 27), date(2026, 11, 25))


@pytest.fixture
async def generated(team: Team, uow_factory: UnitOfWorkFactory) -> list[SimLead]:
    sellers = [team.seller.id, team.seller2.id, team.inactive.id]
    heads = [team.rop.id, team.mop.id, team.admin.id]
    leads = simulate(seed=12, count=400, sellers=sellers, heads=heads)
    await store(uow_factory, leads, created_by=team.rop.id)
    return leads


async def summary_for(uow_factory: UnitOfWorkFactory, actor: Actor, period: Period = PERIOD) -> Summary:
    async with uow_factory(read_only=True) as uow:
        return await uow.analytics.summary(actor, period)


def check(summary: Summary, leads: list[SimLead]) -> None:
    sources = expected_sources(leads)
    assert {s.source: (s.created, s.in_work, s.closed, s.refused) for s in summary.sources} == sources
    assert summary.total.created == len(leads) == sum(c[0] for c in sources.values())
    assert summary.total.closed == sum(c[2] for c in sources.values())
    assert summary.total.refused == sum(c[3] for c in sources.values())
    for funnel in summary.sources:
        assert funnel.conversion == pytest.approx(funnel.closed / funnel.created)
        assert funnel.refusal_rate == pytest.approx(funnel.refused / funnel.created)
    # Most created first.
    assert [s.created for s in summary.sources] == sorted((s.created for s in summary.sources), reverse=True)

    sellers = expected_sellers(leads)
    assert {s.user_id for s in summary.sellers} == set(sellers)
    for seller in summary.sellers:
        hand = sellers[seller.user_id]
        assert (seller.assigned, seller.closed, seller.refused, seller.waiting, seller.unanswered) == (
            hand["assigned"],
            hand["closed"],
            hand["refused"],
            hand["waiting"],
            hand["unanswered"],
        )
        assert sorted(seller.response_seconds) == pytest.approx(sorted(hand["times"]))
        if hand["median"] is None:
            assert seller.median_response is None and seller.p90_response is None
        else:
            assert seller.median_response is not None and seller.p90_response is not None
            assert seller.median_response.total_seconds() == pytest.approx(hand["median"])
            assert seller.p90_response.total_seconds() == pytest.approx(hand["p90"])
    assert summary.unassigned == sum(1 for lead in leads if lead.assignee is None)

    reasons = expected_reasons(leads)
    assert {r.reason.lower(): r.count for r in summary.reasons} == dict(reasons)
    assert [r.count for r in summary.reasons] == sorted(reasons.values(), reverse=True)

    assert {c.week_start: (c.created, c.closed) for c in summary.cohorts} == expected_cohorts(leads)
    assert all(c.week_start.weekday() == 0 for c in summary.cohorts)
    assert len(summary.daily) == summary.period.days
    assert sum(d.created for d in summary.daily) == len(leads)


async def test_team_figures_match_a_hand_count(generated: list[SimLead], team: Team, uow_factory: UnitOfWorkFactory):
    leads = in_period(generated, PERIOD.first, PERIOD.last)
    # The data set has what the figures must cope with.
    assert any(lead.deleted for lead in generated)
    assert any(sum(1 for row in lead.history if row["action"] == "assigned") > 1 for lead in leads)
    assert any(row["old_value"] in ("закрыт", "отказ") for lead in leads for row in lead.history)
    assert len(leads) > 150
    for who in (team.rop, team.admin, team.mop, team.finance):
        summary = await summary_for(uow_factory, who.user)
        assert not summary.own_only
        check(summary, leads)
        assert sum(s.answered for s in summary.sellers) > 20 and sum(s.unanswered for s in summary.sellers) > 5
    # Grouped reasons: three spellings of «дорого» are one line.
    summary = await summary_for(uow_factory, team.rop.user)
    assert summary.reasons[0].count >= 3
    assert len({r.reason.lower() for r in summary.reasons}) == len(summary.reasons)


async def test_a_salesperson_gets_only_their_own_leads(
    generated: list[SimLead], team: Team, uow_factory: UnitOfWorkFactory
):
    for seller in (team.seller, team.seller2):
        summary = await summary_for(uow_factory, seller.user)
        assert summary.own_only
        leads = in_period(generated, PERIOD.first, PERIOD.last, seller=seller.id)
        check(summary, leads)
        assert [s.user_id for s in summary.sellers] == [seller.id]
        assert summary.unassigned == 0


async def test_a_single_day(generated: list[SimLead], team: Team, uow_factory: UnitOfWorkFactory):
    day = FIRST_DAY + timedelta(days=10)
    summary = await summary_for(uow_factory, team.rop.user, Period.today(day))
    check(summary, in_period(generated, day, day))


async def test_an_inactive_member_is_refused(team: Team, uow_factory: UnitOfWorkFactory):
    with pytest.raises(Forbidden):
        await summary_for(uow_factory, team.inactive.user)


async def test_an_empty_period(team: Team, uow_factory: UnitOfWorkFactory):
    summary = await summary_for(uow_factory, team.rop.user)
    assert summary.total.created == 0
    assert summary.total.conversion is None and summary.total.refusal_rate is None
    assert summary.sources == [] and summary.sellers == [] and summary.reasons == [] and summary.cohorts == []
    assert [d.created for d in summary.daily] == [0] * PERIOD.days


def test_periods() -> None:
    today = date(2026, 11, 29)
    assert Period.last_days(today, 7) == Period(date(2026, 11, 23), today)
    assert Period.this_month(today) == Period(date(2026, 11, 1), today)
    assert Period.today(today).days == 1
    with pytest.raises(InvalidInput):
        Period(today, today - timedelta(days=1))
    with pytest.raises(InvalidInput):
        Period(today - timedelta(days=MAX_PERIOD_DAYS), today)


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], [1.0, 2.0, 3.0, 4.0, 100.0], list(map(float, range(37)))])
def test_percentile_matches_the_statistics_module(values: list[float]) -> None:
    assert percentile(values, 0.5) == pytest.approx(statistics.median(values))
    if len(values) > 1:
        assert percentile(values, 0.9) == pytest.approx(statistics.quantiles(values, n=10, method="inclusive")[8])
    assert percentile([], 0.5) is None


@pytest.mark.sqlite_only
async def test_a_period_is_read_through_the_creation_index(team: Team, uow_factory: UnitOfWorkFactory) -> None:
    from sqlalchemy import text

    from db.analytics import _lead_facts_query

    start, end = PERIOD.bounds(ZoneInfo("Asia/Tashkent"))
    async with uow_factory(read_only=True) as uow:
        for scope in (None, team.seller.id):
            compiled = _lead_facts_query(start, end, scope).compile(
                uow.session.get_bind(), compile_kwargs={"literal_binds": True}
            )
            plan = (await uow.session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
            main = [row[-1] for row in plan if "leads" in row[-1] and "lead_history" not in row[-1]]
            assert any("ix_leads_live_" in detail for detail in main), plan
            assert not any(detail.startswith("SCAN leads") for detail in main), plan
