"""An Idempotency-Key is bound to the request it was first used for."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import func, select

from db.models import IdempotencyKey, Lead
from db.uow import UnitOfWorkFactory
from tests.api_support import WEBHOOK_SECRET

URL = "/api/leads/webhook/Сайт"
FORM = {"client_name": "Анна Смирнова", "phone_number": "90 555 44 33", "notes": "перезвонить"}


def headers(key: str) -> dict[str, str]:
    return {"X-Webhook-Secret": WEBHOOK_SECRET, "Idempotency-Key": key, "Content-Type": "application/json"}


async def count(uow_factory: UnitOfWorkFactory, model: type) -> int:
    async with uow_factory() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(model)) or 0)


async def test_the_same_key_with_another_body_is_409(client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory) -> None:
    first = await client.post(URL, json=FORM, headers=headers("form-1"))
    other = await client.post(URL, json={**FORM, "phone_number": "+998907777777"}, headers=headers("form-1"))

    assert first.status_code == 201
    assert other.status_code == 409
    assert (other.json()["code"], other.json()["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert "Idempotent-Replayed" not in other.headers
    assert await count(uow_factory, Lead) == 1
    # The second lead was not silently dropped as "replayed": with its own key it is created.
    created = await client.post(URL, json={**FORM, "phone_number": "+998907777777"}, headers=headers("form-2"))
    assert created.status_code == 201
    assert await count(uow_factory, Lead) == 2


async def test_the_same_request_is_replayed_whatever_the_key_order(
    client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory
) -> None:
    first = await client.post(URL, content=json.dumps(FORM).encode(), headers=headers("form-3"))
    reordered = dict(reversed(list(FORM.items())))
    again = await client.post(URL, content=json.dumps(reordered, indent=2).encode(), headers=headers("form-3"))

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await count(uow_factory, Lead) == 1


async def test_the_key_is_stored_with_the_requests_hash(
    client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory
) -> None:
    await client.post(URL, json=FORM, headers=headers("form-4"))
    async with uow_factory() as uow:
        stored = (await uow.session.scalars(select(IdempotencyKey))).one()
    assert stored.request_hash is not None and len(stored.request_hash) == 64
