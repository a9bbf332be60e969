"""The access log keeps no personal data, and X-Forwarded-For counts only from a trusted proxy."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from api.access import ForwardedClient
from api.app import build_server, create_app
from bot.config import Settings
from db.engine import Database
from tests.api_support import bearer
from tests.edge_support import edge_app


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "api.access"]


async def test_the_access_log_has_paths_without_query_strings(
    client: httpx.AsyncClient, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="api.access")

    await client.get("/api/leads/", params={"q": "Иван Петров", "size": 5}, headers=bearer(tokens["admin"]))
    await client.get("/api/leads/", params={"q": "901234567"}, headers=bearer(tokens["admin"]))

    lines = access_lines(caplog)
    assert len(lines) == 2
    for line in lines:
        assert re.fullmatch(r'127\.0\.0\.1 "GET /api/leads/" 200 \d+\.\dms', line), line


def test_uvicorn_logs_no_query_and_trusts_no_proxy_itself(settings: Settings, database: Database) -> None:
    server = build_server(create_app(settings, database), settings)
    assert server.config.access_log is False
    assert server.config.proxy_headers is False


async def _seen_client(app: Any, peer: str, forwarded_for: str | None, caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as c:
        assert (await c.get("/api/health", headers=headers)).status_code == 200
    (line,) = access_lines(caplog)
    return line.split(" ", 1)[0]


async def test_forwarded_for_counts_only_from_trusted_proxies(
    settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="api.access")
    default = edge_app(settings, database)
    proxied = edge_app(settings, database, trusted_proxies=["10.0.0.0/8", "127.0.0.1"])

    # By default nobody is trusted, not even a local peer.
    assert await _seen_client(default, "127.0.0.1", "203.0.113.7", caplog) == "127.0.0.1"
    # Behind a trusted proxy: the right-most address that is not a trusted proxy.
    assert await _seen_client(proxied, "10.1.2.3", "203.0.113.7", caplog) == "203.0.113.7"
    assert await _seen_client(proxied, "10.1.2.3", "6.6.6.6, 203.0.113.7, 10.9.9.9", caplog) == "203.0.113.7"
    # A client that is not a trusted proxy cannot pretend to be someone else.
    assert await _seen_client(proxied, "198.51.100.1", "203.0.113.7", caplog) == "198.51.100.1"
    assert await _seen_client(proxied, "10.1.2.3", None, caplog) == "10.1.2.3"


async def test_the_failure_limit_counts_the_forwarded_client(
    settings: Settings, database: Database, tokens: dict[str, str]
) -> None:
    app = edge_app(settings, database, trusted_proxies=["10.0.0.1"], auth_failures=2)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as proxy:
        attacker = {"X-Forwarded-For": "203.0.113.7", **bearer("lb_guess")}
        statuses = [(await proxy.get("/api/leads/", headers=attacker)).status_code for _ in range(3)]
        other = await proxy.get("/api/leads/", headers={"X-Forwarded-For": "203.0.113.8", **bearer(tokens["rop"])})

    assert statuses == [401, 401, 429]
    assert other.status_code == 200  # the proxy itself is not blocked for everyone behind it


@pytest.mark.parametrize(
    ("chain", "client"),
    [
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("203.0.113.7:5123", "203.0.113.7"),
        ("garbage, 203.0.113.7", "203.0.113.7"),
        ("203.0.113.7, garbage", "10.0.0.1"),
    ],
)
def test_forwarded_for_forms(chain: str, client: str) -> None:
    forwarded = ForwardedClient(app=None, trusted_proxies=["10.0.0.0/8"])  # type: ignore[arg-type]
    assert forwarded.client("10.0.0.1", chain) == client
