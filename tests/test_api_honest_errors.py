"""Honest errors: a busy database is 503 with Retry-After, and the schema's bounds are the server's."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from api.app import create_app
from api.schemas import MAX_ID
from bot.config import Settings
from db.engine import open_database
from tests.api_support import bearer, create_lead
from tests.conftest import Team


@pytest.mark.sqlite_only
async def test_a_database_locked_past_its_wait_is_503(
    api_settings: Settings, settings: Settings, tokens: dict[str, str]
) -> None:
    # Give up after a fraction of a second instead of 30 s: the wait itself is not under test.
    database = open_database(settings.database.url, wait=0.2)
    app = create_app(api_settings, database)
    holder = sqlite3.connect(settings.database.url.removeprefix("sqlite+aiosqlite:///"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://leadbot.test") as client:
            # The token's first use is noted (a write); later reads within minutes write nothing.
            assert (await client.get("/api/leads/", headers=bearer(tokens["admin"]))).status_code == 200
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            # A read goes on beside another writer (WAL): it takes no write lock.
            assert (await client.get("/api/leads/", headers=bearer(tokens["admin"]))).status_code == 200
            response = await client.post(
                "/api/leads/create",
                json={"client_name": "Иван", "phone_number": "+998901112233", "source": "Instagram"},
                headers=bearer(tokens["admin"]),
            )
            holder.rollback()
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "database_busy"
            assert int(response.headers["Retry-After"]) > 0
            again = await client.post(
                "/api/leads/create",
                json={"client_name": "Иван", "phone_number": "+998901112233", "source": "Instagram"},
                headers=bearer(tokens["admin"]),
            )
            assert again.status_code == 201, again.text
    finally:
        holder.rollback()
        holder.close()
        await database.dispose()


class _PoolExhausted:
    def __call__(self, *, read_only: bool = False) -> Any:
        return self

    async def __aenter__(self) -> Any:
        raise PoolTimeoutError("QueuePool limit of size 1 overflow 0 reached, connection timed out, timeout 30.00")

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_no_connection_in_time_is_503(app: FastAPI, client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    app.state.uow_factory = _PoolExhausted()

    response = await client.get("/api/leads/", headers=bearer(tokens["admin"]))

    assert (response.status_code, response.json()["code"]) == (503, "database_busy")
    assert response.headers["Retry-After"].isdigit()


def _integer_schemas(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "integer":
            found.append(node)
        for child in node.values():
            found.extend(_integer_schemas(child))
    elif isinstance(node, list):
        for child in node:
            found.extend(_integer_schemas(child))
    return found


async def test_integer_bounds_are_integers_the_server_applies(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team
) -> None:
    schema = (await client.get("/openapi.json")).json()
    integers = _integer_schemas(schema)
    bounds = [node[key] for node in integers for key in ("minimum", "maximum") if key in node]

    assert bounds and all(type(bound) is int for bound in bounds)
    assert schema["components"]["schemas"]["AssignIn"]["properties"]["assigned_to"]["maximum"] == MAX_ID
    assert float(MAX_ID) == MAX_ID  # exactly representable by a JSON reader that uses doubles
    admin = bearer(tokens["admin"])
    lead = await create_lead(client, tokens["mop"])

    at_bound = await client.get(f"/api/leads/{MAX_ID}", headers=admin)
    past_bound = await client.get(f"/api/leads/{MAX_ID + 1}", headers=admin)
    assign_at = await client.post(f"/api/leads/{lead['id']}/assign", json={"assigned_to": MAX_ID}, headers=admin)
    assign_past = await client.post(f"/api/leads/{lead['id']}/assign", json={"assigned_to": MAX_ID + 1}, headers=admin)

    assert at_bound.status_code == 404  # valid, and no such lead
    assert (past_bound.status_code, past_bound.json()["field"]) == (400, "lead_id")
    assert assign_at.status_code in (400, 404) and assign_at.json().get("reason") != "less_than_equal"
    assert (assign_past.status_code, assign_past.json()["reason"]) == (400, "less_than_equal")
