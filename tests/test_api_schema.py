"""A schema-driven run over /openapi.json with schemathesis, in-process against the ASGI app.

Schemathesis drives the app through its own ASGI client (a background event loop), so this test is
synchronous and gives the app a database without a connection pool (``pooled=False``): connections
are then opened in the loop that uses them. Every operation gets valid (positive) and invalid (negative) requests with a
valid token of each role in turn: no answer may be a 5xx, every answer must match the schema (status
codes, content types, headers, bodies), invalid data must be refused, and an operation that declares
authentication must refuse a request without it (``ignored_auth``). Admin gets the most examples;
the run stays well under a minute.
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
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
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
from tests.edge_support import with_api

# Examples per operation and generation mode, by role: 13 operations x 2 modes x (20 + 4 x 6) cases.
EXAMPLES = {Role.ADMIN: 20, Role.ROP: 6, Role.MOP: 6, Role.SELLER: 6, Role.FINANCE: 6}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


def run_in_own_loop(make: Callable[[], Any]) -> Any:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, make()).result()


async def seed(settings: Settings) -> dict[Role, str]:
    """One member of each role, a few leads (ids 1..6, some the salesperson's), and a token per role."""
    database = open_database(settings.database.url)
    factory = UnitOfWorkFactory(database, settings)
    async with factory() as uow:
        members = {
            role: User(telegram_id=3001 + n, role=role, first_name=role.value.title(), is_active=True)
            for n, role in enumerate(Role)
        }
        uow.session.add_all(members.values())
        await uow.session.flush()
        admin, seller = members[Role.ADMIN], members[Role.SELLER]
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
        tokens = {role: await uow.tokens.issue(member) for role, member in members.items()}
        await uow.commit()
    await database.dispose()
    return tokens


@pytest.fixture
def schema_app(settings: Settings) -> Any:
    # ignored_auth's probes fail to authenticate on purpose: they must not lock the run out.
    settings = with_api(settings, webhook_secrets={"Сайт": WEBHOOK_SECRET}, auth_failures=10**6)
    tokens = run_in_own_loop(lambda: seed(settings))
    # Schemathesis runs the app in a loop of its own: no connection may outlive a request there.
    return create_app(settings, open_database(settings.database.url, pooled=False)), tokens


def pinned(operation: Any) -> dict[str, Any]:
    """Path parameters that reach real work: the configured webhook source, and a lead the salesperson
    owns (random ids are nearly all 404). DELETE keeps random ids, so the lead outlives the run."""
    names = {parameter.name for parameter in operation.iter_parameters() if parameter.location == "path"}
    fixed: dict[str, Any] = {}
    if "source" in names:
        fixed["source"] = "Сайт"
    if "lead_id" in names and operation.method.upper() != "DELETE":
        fixed["lead_id"] = 2
    return fixed


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("role", list(Role))
def test_openapi_schema_holds(schema_app: Any, role: Role, mode: GenerationMode) -> None:
    app, tokens = schema_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {tokens[role]}", "X-Webhook-Secret": WEBHOOK_SECRET}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 13

    failures: list[str] = []
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned(operation), headers=headers)

        @hypothesis.given(case=strategy)
        @hypothesis.settings(
            max_examples=EXAMPLES[role],
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            # The credentials are fixed in the strategy, so negative cases never "remove" them, and sent
            # explicitly, so ignored_auth knows them for real ones and probes without them.
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            exercise()
        except hypothesis.errors.Unsatisfiable:
            # Nothing left to break: GET /api/health, GET /api/leads/{lead_id} with its id pinned.
            assert mode == GenerationMode.NEGATIVE
        except (Exception, FailureGroup) as exc:  # go on, so one run reports every broken operation
            failures.append(f"{operation.label}: {exc}")
    assert failures == [], "\n\n".join(failures)
