"""A schema-driven run over /openapi.json with schemathesis, in-process against the ASGI app.

Schemathesis drives the app through its own ASGI client (a background event loop), so this test is
synchronous; the app's database is opened untouched, so its connections are made in the loop that
uses them. Every operation gets valid (positive) and invalid (negative) requests with a
valid token: no answer may be a 5xx, and every answer must match the schema (status codes, content
types, bodies).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from bot.config import Settings
from db.engine import open_database
from db.enums import Role
from db.models import User
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from tests.api_support import WEBHOOK_SECRET

EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def run_in_own_loop(make: Callable[[], Any]) -> Any:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, make()).result()


async def seed(settings: Settings) -> str:
    """A small team, a few leads (ids 1..6, some assigned), and the admin's token."""
    database = open_database(settings.database.url)
    factory = UnitOfWorkFactory(database, settings)
    async with factory() as uow:
        admin = User(telegram_id=3001, role=Role.ADMIN, first_name="Админ", is_active=True)
        seller = User(telegram_id=3002, role=Role.SELLER, first_name="Продажник", last_name="Иванов", is_active=True)
        uow.session.add_all([admin, seller])
        await uow.session.flush()
        for n in range(6):
            await uow.leads.create(
                admin,
                LeadDraft(
                    client_name=f"Клиент {n}",
                    phone_number=f"+99890123450{n}",
                    source="Instagram",
                    budget=1000.5 * n,
                    assigned_to=seller.id if n % 2 else None,
                ),
            )
        token = await uow.tokens.issue(admin)
        await uow.commit()
    await database.dispose()
    return token


@pytest.fixture
def schema_app(settings: Settings) -> Any:
    token = run_in_own_loop(lambda: seed(settings))
    api_settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"webhook_secrets": {"Сайт": _secret()}})}
    )
    # Schemathesis runs the app in a loop of its own: no connection may outlive a request there.
    return create_app(api_settings, open_database(settings.database.url, pooled=False)), token


def _secret() -> Any:
    from pydantic import SecretStr

    return SecretStr(WEBHOOK_SECRET)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_schema_holds(schema_app: Any, mode: GenerationMode) -> None:
    app, token = schema_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {token}", "X-Webhook-Secret": WEBHOOK_SECRET}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 9

    failures: list[str] = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)

        try:
            exercise()
        except hypothesis.errors.Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing to break in GET /api/health: fine
        except Exception as exc:  # go on, so one run reports every broken operation
            failures.append(f"{operation.label}: {exc}")
    assert failures == []
