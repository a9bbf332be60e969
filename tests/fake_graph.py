"""A fake Meta Graph API on 127.0.0.1: ``GET /{version}/{leadgen_id}`` answers a lead's form answers.

Tests point ``[meta] graph_url`` here, so the fetcher runs over real HTTP and never reaches Meta.
``leads`` holds the answers by leadgen id; ``fail_next`` makes the next calls answer an error (a Graph
outage); every call is recorded in ``requests`` (path and query).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from aiohttp import web

ACCESS_TOKEN = "page-token-for-tests"


class FakeGraph:
    def __init__(self, access_token: str = ACCESS_TOKEN) -> None:
        self.access_token = access_token
        self.leads: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._failures: deque[int] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def add_lead(
        self, leadgen_id: str, answers: dict[str, str], *, platform: str = "ig", form_id: str = "F1", ad_id: str = "A1"
    ) -> None:
        self.leads[leadgen_id] = {
            "id": leadgen_id,
            "created_time": "2026-11-29T10:00:00+0000",
            "ad_id": ad_id,
            "form_id": form_id,
            "platform": platform,
            "field_data": [{"name": name, "values": [value]} for name, value in answers.items()],
        }

    def calls_for(self, leadgen_id: str) -> int:
        return sum(1 for path, _ in self.requests if path.endswith(f"/{leadgen_id}"))

    async def _lead(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        if self._failures:
            status = self._failures.popleft()
            return web.json_response({"error": {"message": "unavailable", "code": 2}}, status=status)
        if request.query.get("access_token") != self.access_token:
            return web.json_response({"error": {"message": "Invalid OAuth access token", "code": 190}}, status=400)
        lead = self.leads.get(request.match_info["leadgen_id"])
        if lead is None:
            return web.json_response({"error": {"message": "Unsupported get request", "code": 100}}, status=400)
        return web.json_response(lead)

    async def __aenter__(self) -> FakeGraph:
        app = web.Application()
        app.router.add_get("/{version}/{leadgen_id}", self._lead)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
