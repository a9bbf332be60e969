"""Per-update plumbing: one transaction, the acting user, the repositories and the user's texts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message, TelegramObject, Update
from aiogram.types import User as TgUser

from bot.config import Settings
from bot.texts import pick_language, texts_for
from db.repositories.users import TelegramProfile
from db.uow import UnitOfWorkFactory

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def profile_of(user: TgUser) -> TelegramProfile:
    return TelegramProfile(
        telegram_id=user.id,
        first_name=user.first_name or "",
        last_name=user.last_name,
        username=user.username,
        language=user.language_code,
    )


class DatabaseMiddleware(BaseMiddleware):
    """Opens the update's unit of work, injects ``uow``, ``actor`` and ``texts``, commits on success.

    Any exception rolls the whole update back; the errors router then tells the user what happened.
    Unknown and deactivated users are stopped here with one polite line, except for /start, which
    is how admins and invited people join.
    """

    def __init__(self, uow_factory: UnitOfWorkFactory, settings: Settings) -> None:
        self.uow_factory = uow_factory
        self.settings = settings

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        tg_user: TgUser | None = data.get("event_from_user")
        async with self.uow_factory() as uow:
            actor = await uow.users.sender(tg_user.id) if tg_user else None
            if actor is not None and tg_user is not None:
                actor = await uow.users.touch_profile(actor, profile_of(tg_user))
            lang = pick_language(
                actor.language if actor else None,
                tg_user.language_code if tg_user else None,
                self.settings.bot.default_language,
            )
            texts = texts_for(lang)
            data["uow"] = uow
            data["actor"] = actor
            data["texts"] = texts
            data["settings"] = self.settings
            if tg_user is not None and (actor is None or not actor.is_active) and not _is_start(event):
                await _refuse(
                    event, texts.t("access.unknown" if actor is None else "access.deactivated", telegram_id=tg_user.id)
                )
                return None
            result = await handler(event, data)
            await uow.commit()
            return result


def _is_start(event: TelegramObject) -> bool:
    if not isinstance(event, Update) or event.message is None or event.message.chat.type != ChatType.PRIVATE:
        return False
    words = (event.message.text or "").split(maxsplit=1)
    return bool(words) and words[0].split("@")[0] == "/start"


async def _refuse(event: TelegramObject, text: str) -> None:
    if not isinstance(event, Update):
        return
    if isinstance(event.callback_query, CallbackQuery):
        await event.callback_query.answer(_plain(text)[:200], show_alert=True)
    elif isinstance(event.message, Message) and event.message.chat.type == ChatType.PRIVATE:
        # In groups strangers are simply ignored: a reply to every member would flood the team chat.
        await event.message.answer(text)


def _plain(text: str) -> str:
    return text.replace("<code>", "").replace("</code>", "")


class CommandLeavesConversationMiddleware(BaseMiddleware):
    """Starting another command mid-conversation abandons the conversation (its draft with it).

    Without this a half-finished /new would swallow the next plain text the user types, long after
    they moved on to /leads.
    """

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if isinstance(event, Message) and (event.text or "").startswith("/"):
            command = event.text.split(maxsplit=1)[0].split("@")[0] if event.text else ""
            state: FSMContext | None = data.get("state")
            if command not in ("/cancel", "/help", "/lang") and state is not None and await state.get_state():
                await state.clear()
                data["raw_state"] = None
        return await handler(event, data)
