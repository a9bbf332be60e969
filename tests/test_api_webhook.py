"""Webhook intake: per-source secret, the same validation and duplicates as creation, idempotent retries."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from db.enums import Role
from db.models import IdempotencyKey, Lead, OutboxMessage, User
from db.repositories.tokens import INTEGRATION_TELEGRAM_ID
from db.uow import UnitOfWorkFactory
from tests.api_support import WEBHOOK_SECRET, bearer
from tests.conftest import Team

URL = "/api/leads/webhook/Сайт"
FORM = {"client_name": "Анна Смирнова", "phone_number": "90 555 44 33", "utm_campaign": "winter"}


def secret(value: str = WEBHOOK_SECRET, key: str | None = None) -> dict[str, str]:
    headers = {"X-Webhook-Secret": value}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


async def count(uow_factory: UnitOfWorkFactory, model: type) -> int:
    async with uow_factory() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(model)) or 0)


async def test_form_creates_a_lead_as_the_integration_user(
    client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory, team: Team, tokens: dict[str, str]
) -> None:
    response = await client.post(URL, json=FORM, headers=secret())

    assert response.status_code == 201, response.text
    lead = response.json()
    assert (lead["client_name"], lead["phone_number"], lead["source"], lead["status"]) == (
        "Анна Смирнова",
        "+998905554433",
        "Сайт",
        "новый",
    )
    detail = (await client.get(f"/api/leads/{lead['id']}", headers=bearer(tokens["admin"]))).json()
    assert [(h["action"], h["changed_by"]) for h in detail["history"]] == [("created", "Интеграция")]
    async with uow_factory() as uow:
        creator = await uow.session.scalar(select(User).join(Lead, Lead.created_by_id == User.id))
    assert creator is not None
    assert (creator.telegram_id, creator.role, creator.is_active) == (INTEGRATION_TELEGRAM_ID, Role.ADMIN, False)
    # Case-insensitive source in the URL; the body may name another configured source.
    again = await client.post(
        "/api/leads/webhook/сайт",
        json={"client_name": "Олег", "phone_number": "+998901112233", "source": "instagram"},
        headers=secret(),
    )
    assert (again.status_code, again.json()["source"]) == (201, "Instagram")


async def test_the_new_lead_is_notified_like_any_other(
    client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    response = await client.post(URL, json={**FORM, "assigned_to": team.seller.id}, headers=secret())

    assert response.status_code == 201
    async with uow_factory() as uow:
        queued = [(m.kind, m.chat_id) for m in (await uow.session.scalars(select(OutboxMessage))).all()]
    assert queued == [("lead_new", team.seller.chat_id)]


async def test_secret_is_required_and_checked(client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory) -> None:
    missing = await client.post(URL, json=FORM)
    wrong = await client.post(URL, json=FORM, headers=secret("guess"))
    unknown = await client.post("/api/leads/webhook/Facebook", json=FORM, headers=secret())

    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthorized")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert await count(uow_factory, Lead) == 0


async def test_validation_and_duplicates_as_for_creation(client: httpx.AsyncClient) -> None:
    bad = await client.post(URL, json={**FORM, "phone_number": "звоните"}, headers=secret())
    assert (bad.status_code, bad.json()["field"]) == (400, "phone_number")
    missing = await client.post(URL, json={"phone_number": "+998901234567"}, headers=secret())
    assert (missing.status_code, missing.json()["field"]) == (400, "client_name")

    first = await client.post(URL, json=FORM, headers=secret())
    duplicate = await client.post(URL, json={**FORM, "client_name": "Анна"}, headers=secret())

    assert duplicate.status_code == 409
    assert duplicate.json()["existing_lead_id"] == first.json()["id"]


async def test_same_idempotency_key_creates_nothing_new(
    client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    first = await client.post(URL, json=FORM, headers=secret(key="form-42"))
    second = await client.post(URL, json=FORM, headers=secret(key="form-42"))

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await count(uow_factory, Lead) == 1
    assert await count(uow_factory, IdempotencyKey) == 1
    # A new key with the same phone is a real second attempt: the duplicate answer.
    third = await client.post(URL, json=FORM, headers=secret(key="form-43"))
    assert (third.status_code, third.json()["existing_lead_id"]) == (409, first.json()["id"])
    # A failed attempt leaves its key unused: nothing was stored for it.
    assert await count(uow_factory, IdempotencyKey) == 1
