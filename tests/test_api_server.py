"""The API served for real by uvicorn on 127.0.0.1, as `leadbot api` and `leadbot run` serve it."""

from __future__ import annotations

import asyncio

import httpx

from api.app import build_server, create_app
from bot.config import Settings
from db.engine import Database
from tests.api_support import bearer
from tests.conftest import Team


async def test_uvicorn_serves_the_api(
    settings: Settings,
    database: Database,
    team: Team,
    tokens: dict[str, str],
    free_tcp_port: int,
) -> None:
    served = settings.model_copy(update={"api": settings.api.model_copy(update={"port": free_tcp_port})})
    server = build_server(create_app(served, database), served, embedded=True)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_tcp_port}") as client:
            assert (await client.get("/api/health")).json() == {"status": "ok"}
            assert (await client.get("/api/leads/")).status_code == 401
            created = await client.post(
                "/api/leads/create",
                json={"client_name": "Иван Петров", "phone_number": "+998901234567", "source": "Instagram"},
                headers=bearer(tokens["mop"]),
            )
            assert created.status_code == 201
            listed = (await client.get("/api/leads/", headers=bearer(tokens["finance"]))).json()
            assert [item["id"] for item in listed["items"]] == [created.json()["id"]]
            assert "/api/leads/{lead_id}" in (await client.get("/openapi.json")).json()["paths"]
    finally:
        server.should_exit = True
        await task
