"""A front end on another origin: the browser's preflight and the actual request, as a browser sends them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bot.config import Settings
from db.engine import Database
from tests.api_support import WEBHOOK_SECRET, bearer, lead_body
from tests.edge_support import edge_app

FRONT = "https://crm.example.com"


@pytest.fixture
async def cors_client(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = edge_app(settings, database, cors_origins=[FRONT], webhook_secrets={"Сайт": WEBHOOK_SECRET})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.example.com") as c:
        yield c


def preflight(method: str, headers: str, origin: str = FRONT) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


async def test_the_preflight_allows_the_front_end(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options("/api/leads/1", headers=preflight("PATCH", "authorization,content-type"))

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FRONT
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0


async def test_the_actual_cross_origin_request_is_readable(
    cors_client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    created = await cors_client.post(
        "/api/leads/create", json=lead_body(), headers={**bearer(tokens["mop"]), "Origin": FRONT}
    )
    listed = await cors_client.get("/api/leads/", headers={**bearer(tokens["mop"]), "Origin": FRONT})
    refused = await cors_client.get("/api/leads/", headers={"Origin": FRONT})

    assert created.status_code == 201
    assert created.headers["Access-Control-Allow-Origin"] == FRONT
    assert listed.status_code == 200 and listed.headers["Access-Control-Allow-Origin"] == FRONT
    # Errors too, so the front end can read why (and Retry-After, WWW-Authenticate are exposed).
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == FRONT
    assert "retry-after" in refused.headers["Access-Control-Expose-Headers"].lower()


async def test_another_origin_is_refused_as_json(cors_client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await cors_client.options(
        "/api/leads/", headers=preflight("GET", "authorization", origin="https://evil.example")
    )
    actual = await cors_client.get("/api/leads/", headers={**bearer(tokens["admin"]), "Origin": "https://evil.example"})

    assert response.status_code == 400
    assert response.json()["code"] == "cors_rejected"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Origin" not in actual.headers  # the browser keeps the answer from the page


async def test_same_origin_only_by_default(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await client.get("/api/leads/", headers={**bearer(tokens["admin"]), "Origin": FRONT})
    preflighted = await client.options("/api/leads/", headers=preflight("GET", "authorization"))

    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert preflighted.status_code == 405  # no CORS: an OPTIONS is just a method the path does not serve
    assert "Access-Control-Allow-Origin" not in preflighted.headers
