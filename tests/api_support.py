"""Fixtures and helpers for the HTTP API tests: the app in-process (httpx ASGITransport), a token per role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from bot.config import Settings
from db.engine import Database
from db.models import User
from db.uow import UnitOfWorkFactory
from tests.conftest import Team

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
WEBHOOK_SECRET = "s3cret-for-the-site-form"


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"api": settings.api.model_copy(update={"webhook_secrets": {"Сайт": SecretStr(WEBHOOK_SECRET)}})}
    )


@pytest.fixture
def app(api_settings: Settings, database: Database) -> FastAPI:
    return create_app(api_settings, database)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://leadbot.test") as c:
        yield c


async def issue(uow_factory: UnitOfWorkFactory, user: User) -> str:
    async with uow_factory() as uow:
        token = await uow.tokens.issue(user)
        await uow.commit()
    return token


@pytest.fixture
async def tokens(team: Team, uow_factory: UnitOfWorkFactory) -> dict[str, str]:
    """A live token for each active member, by fixture name (admin, rop, mop, seller, seller2, finance)."""
    names = ("admin", "rop", "mop", "seller", "seller2", "finance")
    return {name: await issue(uow_factory, getattr(team, name).user) for name in names}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def lead_body(phone: str = "+998901234567", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"client_name": "Иван Петров", "phone_number": phone, "source": "Instagram"}
    body.update(overrides)
    return body


async def create_lead(client: httpx.AsyncClient, token: str, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/api/leads/create", json=lead_body(**overrides), headers=bearer(token))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data
