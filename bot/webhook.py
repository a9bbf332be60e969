"""Telegram's webhook on the HTTP API's own server, when ``[bot] listen`` is the API's address.

Then one port serves both (one proxy rule, one TLS name): the update posts are a route of the FastAPI
app behind the same edge as every other route — the ``X-Telegram-Bot-Api-Secret-Token`` is checked in
constant time before a byte of the body is read, the body is bounded by ``[api] max_body_bytes``, and
repeated wrong secrets are slowed like wrong tokens. As with the aiohttp server (``bot.runner``), a post
is answered once its update is handled, so an update whose instance dies is posted again by Telegram.

Lives in ``bot/`` because it feeds aiogram's dispatcher; ``api/`` itself never imports aiogram.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.methods import TelegramMethod
from aiogram.types import Update
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.edge import EdgeRoute, auth_failed, raw_header, refuse_if_blocked, secret_matches, settings_of
from api.errors import ApiError, unauthorized
from bot.config import Settings

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def shares_the_api_server(settings: Settings) -> bool:
    """Webhook mode with ``[bot] listen`` equal to the API's ``host:port``."""
    return bool(
        settings.bot.webhook_url
        and settings.api.enabled
        and settings.bot.listen_address == (settings.api.host, settings.api.port)
    )


class TelegramWebhookRoute(EdgeRoute):
    """Needs Telegram's secret header (``[bot] webhook_secret``) before the body is read."""

    async def authenticate(self, request: Request) -> None:
        await refuse_if_blocked(request)
        secret = settings_of(request).bot.webhook_secret
        presented = raw_header(request, SECRET_HEADER)
        if secret is None or presented is None:
            raise unauthorized(f"the {SECRET_HEADER} header is required")
        if not secret_matches(presented, secret.get_secret_value().encode()):
            raise await auth_failed(request, f"wrong {SECRET_HEADER}")


def mount_webhook(app: FastAPI, settings: Settings, dispatcher: Dispatcher, bot: Bot) -> str:
    """Add the update route to the API at ``[bot] webhook_url``'s path; returns the path."""
    path = urlsplit(settings.bot.webhook_url or "").path or "/"

    async def telegram_update(request: Request) -> JSONResponse:
        try:
            payload: Any = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, "invalid_input", "the body is not JSON") from None
        try:
            update = Update.model_validate(payload, context={"bot": bot})
        except ValidationError:
            raise ApiError(400, "invalid_input", "the body is not a Telegram update") from None
        result: TelegramMethod[Any] | None = await dispatcher.feed_webhook_update(bot, update)
        if isinstance(result, TelegramMethod):  # a handler's answer-in-the-reply: sent as a call instead
            await bot(result)
        return JSONResponse({})

    app.router.add_api_route(
        path,
        telegram_update,
        methods=["POST"],
        route_class_override=TelegramWebhookRoute,
        include_in_schema=False,
    )
    return path
