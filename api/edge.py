"""The HTTP edge: what every API route does before FastAPI parses anything of the request.

FastAPI reads and validates a body before it runs a route's dependencies, so a check done there comes
after the body. Each route here is an ``EdgeRoute`` instead, whose ``handle`` runs, in order:

1. a method the path does not serve: 405 with ``Allow`` naming every method the path serves (Starlette
   names only the first route's);
2. authentication (``BearerRoute``: a personal token; ``WebhookRoute``: the source's secret), behind the
   per-client limit on failed authentications (``api.throttle``, 429) — nothing of the body read yet;
3. the body, at most ``[api] max_body_bytes``: a larger ``Content-Length`` is 413 at once, a stream is
   413 as soon as its chunks add up to more (the rest is never read); it must arrive within
   ``[api] body_timeout`` (408);
4. the route itself, FastAPI reading the body from memory, so no transaction ever waits for a client.

Steps 2 to 4 must give the answer's start within ``[api] request_timeout`` (503 with ``Retry-After``).
The token is checked in a short unit of work of its own, ended before the body is read; the route's
unit of work then acts for that user (``db.permissions.Actor`` may be a ``User`` of another session).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from api.errors import (
    ApiError,
    answer_timeout,
    payload_too_large,
    request_timeout,
    too_many_failures,
    unauthorized,
)
from api.throttle import FailureLimiter, client_key
from bot.config import ApiSection, Settings
from db.models import User
from db.spreadsheets import MAX_FILE_BYTES
from db.uow import UnitOfWorkFactory

_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
# What a multipart upload adds around its file: boundaries and part headers.
MULTIPART_ROOM = 64 * 1024


class _ClientGone(Exception):
    """The client disconnected while sending its body: there is nobody to answer."""


def allowed_methods(scope: Scope) -> str:
    """Every method the router would serve at this path, for ``Allow``: each one is tried on the routes
    as a request (``BaseRoute.matches``), so included routers and path convertors count as they route."""
    routes = getattr(scope.get("router"), "routes", ())
    allowed = [
        method
        for method in _METHOD_ORDER
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


async def read_body(request: Request, receive: Receive, limit: int, seconds: float) -> bytes:
    """The whole body, or 413 the moment it proves larger than ``limit``, or 408 after ``seconds``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit()):
            raise ApiError(400, "invalid_input", "Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise payload_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise payload_too_large(limit)
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        if deadline.expired():
            raise request_timeout(seconds) from None
        raise


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0").strip()
    return length != "0" or "transfer-encoding" in request.headers


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the route: the body already read, then the connection's own (disconnects)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class EdgeRoute(APIRoute):
    """A route behind the edge; ``authenticate`` is where a subclass says who may call it."""

    async def authenticate(self, request: Request) -> None:
        """Nobody to check (the health check, the schema)."""

    def body_limit(self, api: ApiSection) -> int:
        """The largest body this route reads."""
        return api.max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            raise HTTPException(405, headers={"Allow": allowed_methods(scope)})
        request = Request(scope, receive)
        api = settings_of(request).api
        seconds = api.request_timeout.total_seconds()
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                deadline.reschedule(None)  # from the first byte on, the answer is on its way
            await send(message)

        try:
            async with asyncio.timeout(seconds) as deadline:
                try:
                    await self.authenticate(request)
                except ApiError as refusal:
                    if _has_body(request):  # refused unread: the connection cannot carry another request
                        refusal.headers = {**(refusal.headers or {}), "Connection": "close"}
                    raise
                body = await read_body(request, receive, self.body_limit(api), api.body_timeout.total_seconds())
                await super().handle(scope, _replay(body, receive), send_watched)
        except _ClientGone:
            return
        except TimeoutError:
            if deadline.expired() and not started:
                raise answer_timeout(seconds) from None
            raise


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _limiter(request: Request) -> FailureLimiter:
    limiter: FailureLimiter = request.app.state.failure_limiter
    return limiter


def _client(request: Request) -> str:
    return client_key(request.client.host if request.client else None)


async def refuse_if_blocked(request: Request) -> None:
    """429 for a client past its failed authentications (``api.throttle``)."""
    retry = await _limiter(request).retry_after(_client(request))
    if retry is not None:
        raise too_many_failures(retry)


async def auth_failed(request: Request, message: str, *, status_code: int = 401) -> ApiError:
    """A failed authentication, counted against the client; the error to raise (401, or 403 if asked)."""
    await _limiter(request).failed(_client(request))
    if status_code == 401:
        return unauthorized(message)
    return ApiError(status_code, "forbidden", message)


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None when there is no such header."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def user_for_token(factory: UnitOfWorkFactory, token: str) -> User | None:
    """The active user of a live token, read in a unit of work of its own; its use is noted (in a short
    write) only every few minutes, so most requests authenticate without taking a write lock."""
    async with factory(read_only=True) as uow:
        holder = await uow.tokens.authenticate(token)
    if holder is None:
        return None
    if holder.touch_due:
        async with factory() as writer:
            await writer.tokens.touch(holder.token_id)
            await writer.commit()
    return holder.user


class BearerRoute(EdgeRoute):
    """Needs ``Authorization: Bearer <token>``; the user is left in ``request.state.actor``."""

    async def authenticate(self, request: Request) -> None:
        await refuse_if_blocked(request)
        token = bearer_token(request)
        if token is None:
            raise unauthorized()
        factory: UnitOfWorkFactory = request.app.state.uow_factory
        user = await user_for_token(factory, token)
        if user is None:
            raise await auth_failed(request, "the token is invalid or revoked, or its user was deactivated")
        request.state.actor = user


class UploadRoute(BearerRoute):
    """A bearer route taking a file (the spreadsheet import): its body may be as large as the largest file
    accepted, plus room for a multipart envelope, even when ``[api] max_body_bytes`` is smaller."""

    def body_limit(self, api: ApiSection) -> int:
        return max(api.max_body_bytes, MAX_FILE_BYTES + MULTIPART_ROOM)


def webhook_secret_for(api: ApiSection, source: str) -> tuple[str, bytes] | None:
    """(configured name, secret as UTF-8) for ``source``, the name compared case-insensitively."""
    for name, secret in api.webhook_secrets.items():
        if name.casefold() == source.casefold():
            return name, secret.get_secret_value().encode("utf-8")
    return None


def secret_matches(presented: bytes, expected: bytes) -> bool:
    """Constant time: the digests have one length, so neither the content nor the length of the
    secret shows in how long the comparison takes."""
    return hmac.compare_digest(hashlib.sha256(presented).digest(), hashlib.sha256(expected).digest())


def raw_header(request: Request, name: str) -> bytes | None:
    """A header's bytes as sent: Starlette's text form is Latin-1, which a UTF-8 secret never equals."""
    wanted = name.lower().encode("latin-1")
    for key, value in request.headers.raw:
        if key.lower() == wanted:
            return value
    return None


class WebhookRoute(EdgeRoute):
    """Needs the ``X-Webhook-Secret`` of the ``{source}`` in the path; the configured source name is
    left in ``request.state.webhook_source``."""

    async def authenticate(self, request: Request) -> None:
        await refuse_if_blocked(request)
        source: Any = request.path_params.get("source", "")
        configured = webhook_secret_for(settings_of(request).api, str(source))
        if configured is None:
            raise ApiError(404, "not_found", f"no webhook is configured for source {source!r}")
        name, expected = configured
        presented = raw_header(request, WEBHOOK_SECRET_HEADER)
        if presented is None:
            raise unauthorized(f"the {WEBHOOK_SECRET_HEADER} header is required")
        if not secret_matches(presented, expected):
            raise await auth_failed(request, f"wrong {WEBHOOK_SECRET_HEADER}")
        request.state.webhook_source = name
