"""The FastAPI application and the uvicorn server that runs it (alone, or beside the bot)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from api import errors
from api.access import AccessLog, ForwardedClient
from api.edge import WEBHOOK_SECRET_HEADER
from api.meta import MetaLeadFetcher
from api.routes import analytics, exports, health, imports, integrations, leads, meta, webhooks
from api.routes.webhooks import REPLAYED_HEADER
from api.throttle import FailureLimiter, MemoryFailureLimiter, RedisFailureLimiter
from bot.config import ConfigError, Settings, check_webhook_secret
from bot.units import create_uow_factory
from db.engine import Database

DESCRIPTION = """\
The leads API of the reference (`leads-api.md`), served by the same service layer as the Telegram bot:
the same permission table, history and notifications.

**Authentication:** `Authorization: Bearer <token>` on every endpoint except `/api/health` and the
webhook intake. A user gets a personal token in the bot with `/token` (`/token revoke` revokes it);
an operator issues one with `leadbot token issue <telegram id>`. The reference's JavaScript examples
work unchanged once they add this header (and, from another origin, once `[api] cors_origins` lists it).

**Errors:** JSON `{code, message}` plus `field` (400), `existing_lead_id` (409), `allowed` (a status
move not allowed, 400). Validation errors are 400, never 422. 405 names the allowed methods in `Allow`;
408, 413, 429 and 503 come from the edge (slow or large bodies, failed logins, a busy database), 429 and
503 with `Retry-After`.
"""

# What a browser on another origin may send and read (CORS).
CORS_METHODS = ["GET", "POST", "PATCH", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", WEBHOOK_SECRET_HEADER]
CORS_EXPOSED = ["Retry-After", "WWW-Authenticate", REPLAYED_HEADER]


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered as JSON with a code like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        message = bytes(response.body).decode("utf-8", "replace")
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        body = errors.ErrorOut(code="cors_rejected", message=message)
        return errors.error_response(400, body, headers)


def create_app(settings: Settings, database: Database, *, limiter: FailureLimiter | None = None) -> FastAPI:
    """The API. ``limiter`` counts failed authentications (``api.throttle``): in Redis when ``[redis] url``
    is set (shared by every instance), else in memory."""
    for name, secret in settings.api.webhook_secrets.items():
        # Also when the settings were built without validation: a weak secret never serves a request.
        try:
            check_webhook_secret(secret)
        except ValueError as exc:
            raise ConfigError(f"config error: api.webhook_secrets.{name}: {exc}") from None
    app = FastAPI(title="LeadBot API", version="1.0.0", description=DESCRIPTION)
    app.state.settings = settings
    # Through the composition root, so HTTP changes emit the same events/notifications as the bot's.
    app.state.uow_factory = create_uow_factory(settings, database)
    # Meta lead ads: the webhook records leadgen ids, this turns them into leads (kicked by the webhook).
    app.state.meta_fetcher = MetaLeadFetcher(app.state.uow_factory, settings)
    if limiter is None:
        limiter = (
            RedisFailureLimiter.from_settings(settings.api, settings.redis.url)
            if settings.redis.url
            else MemoryFailureLimiter.from_settings(settings.api)
        )
    app.state.failure_limiter = limiter
    errors.install(app)
    app.include_router(health.router)
    app.include_router(imports.router)
    app.include_router(meta.router)
    app.include_router(integrations.amocrm_router)
    app.include_router(integrations.bitrix24_router)
    app.include_router(leads.router)
    app.include_router(webhooks.router)
    app.include_router(analytics.router)
    app.include_router(exports.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # The last added runs first: the client's address, then the access log, then CORS.
    if settings.api.cors_origins:
        app.add_middleware(
            JsonCORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    app.add_middleware(AccessLog)
    app.add_middleware(ForwardedClient, trusted_proxies=settings.api.trusted_proxies)
    return app


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _integer_bounds(node: Any) -> None:
    """FastAPI's schema model keeps bounds as floats (``"maximum": 9.007199254740991e+15``); an
    integer's bounds are written as integers, as the server applies them."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in _BOUNDS:
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = int(value)
        for child in node.values():
            _integer_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _integer_bounds(child)


async def close_app(app: FastAPI) -> None:
    """Let go of what the app holds beyond the database: the Meta fetcher's pass, the shared failure
    counts' connection."""
    await app.state.meta_fetcher.stop()
    close = getattr(app.state.failure_limiter, "close", None)
    if close is not None:
        await close()


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
        _integer_bounds(schema)
        app.openapi_schema = schema
    return app.openapi_schema


class EmbeddedServer(uvicorn.Server):
    """uvicorn beside the bot: the bot's polling owns the signals; the runner stops this one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app: FastAPI, settings: Settings, *, embedded: bool = False) -> uvicorn.Server:
    # No uvicorn access log (it prints query strings: searched names, phone digits) and no uvicorn
    # proxy headers (it trusts any local peer): api.access does both, by [api] trusted_proxies.
    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_level="info",
        access_log=False,
        proxy_headers=False,
        lifespan="off",
    )
    return EmbeddedServer(config) if embedded else uvicorn.Server(config)
