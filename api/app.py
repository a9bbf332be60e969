"""The FastAPI application and the uvicorn server that runs it (alone, or beside the bot)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import errors
from api.routes import health, leads, webhooks
from bot.config import Settings
from bot.factory import create_uow_factory
from db.engine import Database

DESCRIPTION = """\
The leads API of the reference (`leads-api.md`), served by the same service layer as the Telegram bot:
the same permission table, history and notifications.

**Authentication:** `Authorization: Bearer <token>` on every endpoint except `/api/health` and the
webhook intake. A user gets a personal token in the bot with `/token` (`/token revoke` revokes it);
an operator issues one with `leadbot token issue <telegram id>`. The reference's JavaScript examples
work unchanged once they add this header.

**Errors:** JSON `{code, message}` plus `field` (400), `existing_lead_id` (409), `allowed` (a status
move not allowed, 400). Validation errors are 400, never 422.
"""


def create_app(settings: Settings, database: Database) -> FastAPI:
    app = FastAPI(title="LeadBot API", version="1.0.0", description=DESCRIPTION)
    app.state.settings = settings
    # Through the composition root, so HTTP changes emit the same events/notifications as the bot's.
    app.state.uow_factory = create_uow_factory(settings, database)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(leads.router)
    app.include_router(webhooks.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without its 422 answers: validation errors are 400 with our error body here."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


class EmbeddedServer(uvicorn.Server):
    """uvicorn beside the bot: the bot's polling owns the signals; the runner stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app: FastAPI, settings: Settings, *, embedded: bool = False) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=settings.api.host, port=settings.api.port, log_level="info", proxy_headers=True, lifespan="off"
    )
    return EmbeddedServer(config) if embedded else uvicorn.Server(config)
