"""Turns exceptions into a clear answer: nothing reaches the user as silence.

What the update had not committed is rolled back by the time these run. An update commits before its
first request to Telegram (``bot.middlewares``), and handlers change things before they answer, so a
refusal or an error found while working still means "nothing changed".
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent

from bot.presentation.views import CALLBACK_ANSWER_LIMIT, describe_error
from bot.texts import Texts, pick_language, texts_for
from db.errors import DomainError

log = logging.getLogger(__name__)


def _texts(event: ErrorEvent, data: dict[str, Any]) -> Texts:
    texts = data.get("texts")
    if isinstance(texts, Texts):
        return texts
    update = event.update
    tg_user = (
        update.message.from_user
        if update.message
        else (update.callback_query.from_user if update.callback_query else None)
    )
    return texts_for(pick_language(None, tg_user.language_code if tg_user else None))


async def _tell(event: ErrorEvent, text: str) -> None:
    update = event.update
    if update.callback_query is not None:
        plain = text.replace("<code>", "").replace("</code>", "")
        await update.callback_query.answer(plain[:CALLBACK_ANSWER_LIMIT], show_alert=True)
    elif update.message is not None:
        await update.message.answer(text)


async def on_domain_error(event: ErrorEvent, **data: Any) -> None:
    assert isinstance(event.exception, DomainError)
    await _tell(event, describe_error(_texts(event, data), event.exception))


async def on_stale_message(event: ErrorEvent, **data: Any) -> None:
    # "message is not modified" after a double tap is harmless; anything else is a stale keyboard.
    if "message is not modified" in str(event.exception):
        if event.update.callback_query is not None:
            await event.update.callback_query.answer()
        return
    log.warning("telegram refused an edit: %s", event.exception)
    await _tell(event, _texts(event, data).t("common.stale_button"))


async def on_unexpected(event: ErrorEvent, **data: Any) -> None:
    log.exception("unhandled error in update %s", event.update.update_id, exc_info=event.exception)
    try:
        await _tell(event, _texts(event, data).t("error.internal"))
    except Exception:  # the apology itself failed (e.g. Telegram is down); the log has it
        log.exception("could not report an error to the user")


def create_router() -> Router:
    router = Router(name=__name__)
    router.errors.register(on_domain_error, ExceptionTypeFilter(DomainError))
    router.errors.register(on_stale_message, ExceptionTypeFilter(TelegramBadRequest))
    router.errors.register(on_unexpected)
    return router
