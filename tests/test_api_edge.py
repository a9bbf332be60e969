"""The HTTP edge: secrets, authentication before the body, body limits, timeouts, failed-login limits, 405."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select

from api.app import create_app
from api.throttle import MemoryFailureLimiter
from bot.config import ConfigError, Settings, load_settings
from db.engine import Database
from db.models import Lead
from db.uow import UnitOfWorkFactory
from integrations.amocrm import AmoCrmSection
from tests.api_support import WEBHOOK_SECRET, bearer, lead_body
from tests.conftest import Team
from tests.edge_support import ManualClock, asgi_call, edge_app, with_api

WEBHOOK = "/api/leads/webhook/Сайт"


async def lead_count(uow_factory: UnitOfWorkFactory) -> int:
    async with uow_factory() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Lead)) or 0)


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(app: FastAPI, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=client)
        made = httpx.AsyncClient(transport=transport, base_url="http://leadbot.test")
        clients.append(made)
        return made

    yield make
    for made in clients:
        await made.aclose()


# ---- 1. secrets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "short-secret", " " * 3])
def test_a_short_or_empty_webhook_secret_stops_the_start(secret: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[api.webhook_secrets]\n"Сайт" = "{secret}"\n', encoding="utf-8")

    with pytest.raises(ConfigError) as error:
        load_settings(config, required=True)

    lines = str(error.value).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("config error: api.webhook_secrets.Сайт: ")
    assert "16 characters" in lines[0]
    if secret.strip():
        assert secret not in lines[0]  # the value itself is never echoed


def test_create_app_refuses_a_weak_secret_even_in_unvalidated_settings(settings: Settings, database: Database) -> None:
    weak = settings.model_copy(
        update={"api": settings.api.model_copy(update={"webhook_secrets": {"Сайт": SecretStr("")}})}
    )
    with pytest.raises(ConfigError, match=r"api\.webhook_secrets\.Сайт"):
        create_app(weak, database)


async def test_a_non_ascii_secret_matches_its_utf8_bytes(
    settings: Settings, database: Database, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    secret = "пароль-для-сайта-🔑-2026"
    app = edge_app(settings, database, webhook_secrets={"Сайт": secret})
    body = b'{"client_name": "Anna", "phone_number": "+998905554433"}'
    json_type = ("Content-Type", "application/json")

    right = await asgi_call(
        app, "POST", WEBHOOK, headers=[("X-Webhook-Secret", secret.encode()), json_type], chunks=[body]
    )
    wrong = await asgi_call(
        app, "POST", WEBHOOK, headers=[("X-Webhook-Secret", secret.encode()[:-1]), json_type], chunks=[body]
    )

    assert right.status == 201, right.body
    assert (wrong.status, wrong.json()["code"]) == (401, "unauthorized")
    assert await lead_count(uow_factory) == 1


async def test_a_bad_token_is_refused_before_the_body_is_read(app: FastAPI, team: Team) -> None:
    for headers in ([], [("Authorization", "Bearer lb_wrong")]):
        answer = await asgi_call(
            app,
            "POST",
            "/api/leads/create",
            headers=[*headers, ("Content-Type", "application/json"), ("Content-Length", "13")],
            chunks=[b'{"client_name', b'": "broken'],
        )
        assert (answer.status, answer.json()["code"]) == (401, "unauthorized")
        assert answer.chunks_pulled == 0
        assert answer.headers["connection"] == "close"  # the unread body is not waited for


async def test_a_wrong_webhook_secret_is_401_not_validation_details(client: httpx.AsyncClient, app: FastAPI) -> None:
    invalid = {"phone_number": "not a phone", "budget": "lots"}
    for headers in ({}, {"X-Webhook-Secret": "guess-guess-guess-guess"}):
        response = await client.post(WEBHOOK, json=invalid, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert "field" not in response.json()
    answer = await asgi_call(app, "POST", WEBHOOK, headers=[("X-Webhook-Secret", "nope")], chunks=[b"{", b"}"])
    assert (answer.status, answer.chunks_pulled) == (401, 0)


# ---- 2. limits -----------------------------------------------------------------------------------------


async def test_a_declared_large_body_is_413_without_reading_it(
    settings: Settings, database: Database, tokens: dict[str, str]
) -> None:
    app = create_app(with_api(settings), database)
    answer = await asgi_call(
        app,
        "POST",
        "/api/leads/create",
        headers=[("Authorization", f"Bearer {tokens['mop']}"), ("Content-Length", str(200 * 2**20))],
        chunks=[b"x" * 1024] * 4,
    )

    assert (answer.status, answer.json()["code"]) == (413, "payload_too_large")
    assert answer.chunks_pulled == 0
    assert answer.headers["connection"] == "close"


async def test_a_streamed_large_body_is_413_as_soon_as_it_is_too_large(
    settings: Settings, database: Database, tokens: dict[str, str], uow_factory: UnitOfWorkFactory
) -> None:
    app = edge_app(settings, database, max_body_bytes=1000)
    answer = await asgi_call(
        app,
        "POST",
        "/api/leads/create",
        headers=[("Authorization", f"Bearer {tokens['mop']}"), ("Content-Type", "application/json")],
        chunks=[b" " * 400] * 10,  # no Content-Length: chunked
    )

    assert (answer.status, answer.json()["code"]) == (413, "payload_too_large")
    assert answer.chunks_pulled == 3  # 1200 bytes > 1000: the other 2800 were never read
    assert await lead_count(uow_factory) == 0


async def test_the_default_limit_is_one_megabyte(
    client: httpx.AsyncClient, tokens: dict[str, str], uow_factory: UnitOfWorkFactory
) -> None:
    padded = lead_body(notes="x") | {"padding": "y" * (2**20)}
    response = await client.post("/api/leads/create", json=padded, headers=bearer(tokens["mop"]))
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")

    fits = lead_body() | {"notes": "z" * 2000}
    response = await client.post("/api/leads/create", json=fits, headers=bearer(tokens["mop"]))
    assert response.status_code == 201


async def test_a_body_that_stops_coming_is_408(settings: Settings, database: Database, tokens: dict[str, str]) -> None:
    app = edge_app(settings, database, body_timeout=timedelta(milliseconds=20))
    answer = await asgi_call(
        app,
        "POST",
        "/api/leads/create",
        headers=[("Authorization", f"Bearer {tokens['mop']}"), ("Content-Type", "application/json")],
        chunks=[b'{"client_name": '],
        stalls=True,
    )
    assert (answer.status, answer.json()["code"]) == (408, "request_timeout")


class _Hanging:
    """A unit-of-work factory whose units never open (a database that never answers)."""

    def __call__(self, *, read_only: bool = False) -> Any:
        return self

    async def __aenter__(self) -> Any:
        await asyncio.Event().wait()

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_an_answer_not_started_in_time_is_503(
    settings: Settings, database: Database, tokens: dict[str, str]
) -> None:
    app = edge_app(settings, database, request_timeout=timedelta(milliseconds=20))
    app.state.uow_factory = _Hanging()

    answer = await asgi_call(app, "GET", "/api/leads/", headers=[("Authorization", f"Bearer {tokens['admin']}")])

    assert (answer.status, answer.json()["code"]) == (503, "timeout")
    assert answer.headers["retry-after"].isdigit()
    health = await asgi_call(app, "GET", "/api/health")
    assert health.status == 200


async def test_failed_logins_are_limited_per_client(
    settings: Settings, database: Database, tokens: dict[str, str], client_for: Any
) -> None:
    clock = ManualClock()
    limiter = MemoryFailureLimiter(3, 60, clock=clock)
    app = edge_app(settings, database, limiter=limiter)
    attacker = client_for(app, ("203.0.113.7", 1234))
    neighbour = client_for(app, ("203.0.113.8", 1234))

    for n in range(3):
        assert (await attacker.get("/api/leads/", headers=bearer(f"lb_guess{n}"))).status_code == 401
        clock.now += 1
    blocked = await attacker.get("/api/leads/", headers=bearer(tokens["admin"]))  # even the right token

    assert (blocked.status_code, blocked.json().get("code")) == (429, "too_many_failures"), blocked.text
    assert blocked.headers["Retry-After"] == "57"  # the first failure leaves the window at 1060
    assert (await neighbour.get("/api/leads/", headers=bearer(tokens["admin"]))).status_code == 200
    assert (await attacker.get("/api/health")).status_code == 200
    # No credentials at all is a plain 401 and no failure.
    assert (await neighbour.get("/api/leads/")).status_code == 401
    assert await limiter.retry_after("203.0.113.8") is None

    clock.now += 57
    assert (await attacker.get("/api/leads/", headers=bearer(tokens["admin"]))).status_code == 200


async def test_wrong_webhook_secrets_count_as_failed_logins(
    settings: Settings, database: Database, client_for: Any, uow_factory: UnitOfWorkFactory
) -> None:
    limiter = MemoryFailureLimiter(2, 60, clock=ManualClock())
    app = edge_app(settings, database, limiter=limiter, webhook_secrets={"Сайт": WEBHOOK_SECRET})
    attacker = client_for(app, ("198.51.100.9", 999))
    form = {"client_name": "Anna", "phone_number": "+998905554433"}

    statuses = [
        (await attacker.post(WEBHOOK, json=form, headers={"X-Webhook-Secret": f"guess-{n:020d}"})).status_code
        for n in range(3)
    ]
    right = await attacker.post(WEBHOOK, json=form, headers={"X-Webhook-Secret": WEBHOOK_SECRET})

    assert statuses == [401, 401, 429]
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
    assert await lead_count(uow_factory) == 0


async def test_the_configured_failure_limit_is_used(settings: Settings, database: Database, client_for: Any) -> None:
    app = edge_app(settings, database, auth_failures=2, auth_failure_window="10m")
    attacker = client_for(app)
    statuses = [(await attacker.get("/api/leads/", headers=bearer("lb_x"))).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert 590 <= int((await attacker.get("/api/leads/", headers=bearer("lb_x"))).headers["Retry-After"]) <= 600


# ---- 5. 405 with the real Allow list ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("PUT", "/api/leads/1", "GET, PATCH, DELETE"),
        ("OPTIONS", "/api/leads/1", "GET, PATCH, DELETE"),
        ("PATCH", "/api/leads/create", "POST"),
        ("GET", "/api/leads/create", "POST"),
        ("DELETE", "/api/leads/", "GET"),
        ("PUT", "/api/leads/1/comment", "POST"),
        ("GET", "/api/leads/webhook/Сайт", "POST"),
        ("POST", "/api/health", "GET"),
    ],
)
async def test_a_method_the_path_does_not_serve_is_405_with_every_allowed_method(
    method: str, url: str, allow: str, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    response = await client.request(method, url, headers=bearer(tokens["admin"]))

    assert response.status_code == 405, response.text
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["Allow"] == allow


async def test_allow_lists_exactly_what_the_schema_documents(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        url = path.replace("{lead_id}", "1").replace("{source}", "Сайт")
        response = await client.request("PUT", url, headers=bearer(tokens["admin"]))
        assert response.status_code == 405, url
        assert set(response.headers["Allow"].split(", ")) == {m.upper() for m in operations}, url


async def test_a_lead_url_is_digits(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await client.get("/api/leads/abc", headers=bearer(tokens["admin"]))
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


# ---- amoCRM's webhook secret (query or header) is checked before its body too ---------------------------

AMO_SECRET = "amo-webhook-secret-0123456789"


async def test_a_wrong_amocrm_secret_is_refused_before_the_body_is_read(settings: Settings, database: Database) -> None:
    amo = AmoCrmSection(base_url="https://leadbot.amocrm.ru", long_lived_token="lived", webhook_secret=AMO_SECRET)
    app = create_app(settings.model_copy(update={"amocrm": amo}), database)
    url = "/api/integrations/amocrm/webhook"
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    body = [b"account%5Bsubdomain%5D=", b"leadbot"]

    refused = [
        await asgi_call(app, "POST", url, headers=form, chunks=body, query=b"secret=" + AMO_SECRET[:-1].encode()),
        await asgi_call(app, "POST", url, headers=[*form, ("X-Webhook-Secret", AMO_SECRET + "x")], chunks=body),
        await asgi_call(app, "POST", url, headers=form, chunks=body),
    ]
    right = await asgi_call(app, "POST", url, headers=form, chunks=body, query=f"secret={AMO_SECRET}".encode())

    assert [(answer.status, answer.json()["code"], answer.chunks_pulled) for answer in refused] == [
        (401, "unauthorized", 0)
    ] * 3
    assert (right.status, right.json(), right.chunks_pulled) == (200, {"received": 0, "queued": 0}, 2)
