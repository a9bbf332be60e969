"""GET /api/analytics/summary: the core's figures as JSON, with the same permissions as /stats."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx
import pytest

from db.uow import UnitOfWorkFactory
from tests.analytics_data import expected_sellers, expected_sources, in_period, simulate, store
from tests.api_support import bearer
from tests.conftest import Team

QUERY = {"from": "2026-10-27", "to": "2026-11-25"}


@pytest.fixture
async def generated(team: Team, uow_factory: UnitOfWorkFactory) -> list[Any]:
    leads = simulate(seed=21, count=150, sellers=[team.seller.id, team.seller2.id], heads=[team.rop.id, team.mop.id])
    await store(uow_factory, leads, created_by=team.rop.id)
    return leads


async def get_summary(client: httpx.AsyncClient, token: str, **params: str) -> httpx.Response:
    return await client.get("/api/analytics/summary", params=params or QUERY, headers=bearer(token))


async def test_summary_for_the_team(client: httpx.AsyncClient, tokens: dict[str, str], generated: list[Any]) -> None:
    leads = in_period(generated, date(2026, 10, 27), date(2026, 11, 25))
    for name in ("admin", "rop", "mop", "finance"):
        response = await get_summary(client, tokens[name])
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["period"] == {"from": "2026-10-27", "to": "2026-11-25", "timezone": "Asia/Tashkent"}
        assert body["own_only"] is False
        assert body["total"]["created"] == len(leads)
        assert {s["source"]: (s["created"], s["in_work"], s["closed"], s["refused"]) for s in body["sources"]} == (
            expected_sources(leads)
        )
        hand = expected_sellers(leads)
        for seller in body["sellers"]:
            counted = hand[seller["user_id"]]
            assert seller["assigned"] == counted["assigned"]
            assert seller["unanswered"] == counted["unanswered"]
            if counted["median"] is None:
                assert seller["median_response_seconds"] is None
            else:
                assert seller["median_response_seconds"] == pytest.approx(counted["median"])
                assert seller["p90_response_seconds"] == pytest.approx(counted["p90"])
        assert len(body["daily"]) == 30
        assert sum(c["created"] for c in body["cohorts"]) == len(leads)


async def test_a_salesperson_gets_their_own(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team, generated: list[Any]
) -> None:
    body = (await get_summary(client, tokens["seller"])).json()
    own = in_period(generated, date(2026, 10, 27), date(2026, 11, 25), seller=team.seller.id)
    assert body["own_only"] is True
    assert body["total"]["created"] == len(own) > 0
    assert [s["user_id"] for s in body["sellers"]] == [team.seller.id]
    assert body["unassigned"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-30", "to": "2026-11-01"}, "period"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "period"),
        ({"from": "0001-01-01", "to": "0001-01-02"}, "period"),
        ({"from": "2026-11-01", "to": "9999-12-31"}, "period"),
        ({"from": "01.11.2026", "to": "2026-11-30"}, None),
        ({"to": "2026-11-30"}, None),
    ],
)
async def test_bad_periods_are_400(
    client: httpx.AsyncClient, tokens: dict[str, str], params: dict[str, str], field: str | None
) -> None:
    response = await client.get("/api/analytics/summary", params=params, headers=bearer(tokens["rop"]))
    assert response.status_code == 400, response.text
    if field is not None:
        assert response.json()["field"] == field


async def test_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/analytics/summary", params=QUERY)).status_code == 401


async def test_documented_in_openapi(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/api/analytics/summary"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"from", "to"}
    assert {"200", "400", "401", "403"} <= set(operation["responses"])
    assert operation["security"]
    # The files: their media types, their parameters and errors.
    xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    for path, media, params in (
        ("/api/analytics/report.pdf", "application/pdf", {"from", "to"}),
        ("/api/leads/export.xlsx", xlsx, {"from", "to", "status", "source", "assigned_to", "q", "updated_since"}),
    ):
        operation = schema["paths"][path]["get"]
        assert media in operation["responses"]["200"]["content"], path
        assert params <= {p["name"] for p in operation["parameters"]}, path
        assert {"400", "401"} <= set(operation["responses"]) and operation["security"], path
