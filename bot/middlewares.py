"""Per-update plumbing: the acting user, the update's unit of work, the user's texts, and the rule that
no transaction is open while the bot waits on Telegram.

How an update meets the database:

1. ``DatabaseMiddleware`` (outer, every update) opens a **read** unit of work, looks the sender up and
   injects ``uow``, ``actor`` and ``texts``. Unknown and deactivated users are stopped here with one
   polite line, except for /start, which is how admins and invited people join.
2. ``WriteUnitMiddleware`` (inner, once the handler is known) swaps that unit for a **write** unit when
   the handler is flagged ``WRITES`` (``flags=WRITES`` where it is registered). Read units never take
   a write lock; on SQLite they cannot write at all (``db.engine``), so a missing flag fails loudly in
   the tests instead of racing in production.
3. ``CommitBeforeTelegram`` (a middleware of the bot's session, so it sees every Bot API call) commits
   the update's unit before any request leaves for Telegram: the change and its notifications (the
   outbox) are written, the connection and any lock are given back, and only then does the update wait
   on the network. Work the handler does after a reply begins a new transaction, which the middleware
   commits when the handler returns.

Any exception rolls back what was not committed yet; the errors router then tells the user.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any
from weakref import WeakSet

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.base import BaseSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.dispatcher.flags import get_flag
from aiogram.enums import ChatType
from aiogram.fsm.context import FSMContext
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import CallbackQuery, Message, TelegramObject, Update
from aiogram.types import User as TgUser

from bot.config import Settings
from bot.once import mark_current
from bot.texts import pick_language, texts_for
from db.repositories.users import TelegramProfile
from db.uow import UnitOfWork, UnitOfWorkFactory

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# The flag of a handler that changes something: ``router.message.register(..., flags=WRITES)``.
WRITES = {"writes": True}

# The unit of work of the update this task is handling, if any (see CommitBeforeTelegram).
_UPDATE_UNIT: ContextVar[UnitOfWork | None] = ContextVar("leadbot_update_unit", default=None)


def profile_of(user: TgUser) -> TelegramProfile:
    return TelegramProfile(
        telegram_id=user.id,
        first_name=user.first_name or "",
        last_name=user.last_name,
        username=user.username,
        language=user.language_code,
    )


class CommitBeforeTelegram(BaseRequestMiddleware):
    """Commits the current update's unit of work before a Bot API request is sent.

    Installed once per bot session (``install``); requests made outside an update (the delivery worker,
    jobs) pass straight through: those open and commit their own units before they talk to Telegram.
    """

    _installed: WeakSet[BaseSession] = WeakSet()

    @classmethod
    def install(cls, bot: Bot) -> None:
        if bot.session not in cls._installed:
            bot.session.middleware(cls())
            cls._installed.add(bot.session)

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        unit = _UPDATE_UNIT.get()
        if unit is not None and unit.in_transaction():
            await unit.commit()
        # The update's effects are in place and nothing of it is visible yet: several instances in
        # webhook mode mark it handled here, so a redelivery elsewhere is skipped (bot.once).
        await mark_current()
        return await make_request(bot, method)


class KeepResponseModels(BaseRequestMiddleware):
    """Keeps the parametrized ``Response[...]`` model of each Bot API method this bot calls alive.

    aiogram reads every answer with ``Response[<the method's result type>]``. Pydantic caches a
    parametrized generic model only weakly, and such a class sits in reference cycles, so the garbage
    collector's young-generation pass frees it within moments and the next request builds the class
    again: 2-5 ms of schema building on the event loop for every Bot API answer, about a quarter of a
    busy bot's CPU. Holding one strong reference per method type makes every later lookup a
    cache hit. Public API only: ``__returning__`` is the result type each ``TelegramMethod`` declares.
    """

    def __init__(self) -> None:
        self.models: dict[type[TelegramMethod[Any]], type[Response[Any]]] = {}

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot, method: TelegramMethod[TelegramType]
    ) -> Response[TelegramType]:
        kind = type(method)
        if kind not in self.models:
            self.models[kind] = Response[method.__returning__]  # type: ignore[name-defined]
        return await make_request(bot, method)


class DatabaseMiddleware(BaseMiddleware):
    """Opens the update's (read) unit of work, injects ``uow``, ``actor`` and ``texts``, commits at the end."""

    def __init__(self, uow_factory: UnitOfWorkFactory, settings: Settings) -> None:
        self.uow_factory = uow_factory
        self.settings = settings

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        bot = data.get("bot")
        if isinstance(bot, Bot):
            CommitBeforeTelegram.install(bot)
        tg_user: TgUser | None = data.get("event_from_user")
        uow = self.uow_factory.open(read_only=True)
        token = _UPDATE_UNIT.set(uow)
        data["uow"] = uow
        try:
            actor = await uow.users.sender(tg_user.id) if tg_user else None
            if actor is not None and tg_user is not None:
                profile = profile_of(tg_user)
                if uow.users.profile_changes(actor, profile):
                    async with self.uow_factory() as writer:
                        actor = await writer.users.touch_profile(actor, profile)
                        await writer.commit()
            lang = pick_language(
                actor.language if actor else None,
                tg_user.language_code if tg_user else None,
                self.settings.bot.default_language,
            )
            texts = texts_for(lang)
            data["actor"] = actor
            data["texts"] = texts
            data["settings"] = self.settings
            if tg_user is not None and (actor is None or not actor.is_active) and not _is_start(event):
                await uow.commit()
                await _refuse(
                    event, texts.t("access.unknown" if actor is None else "access.deactivated", telegram_id=tg_user.id)
                )
                return None
            result = await handler(event, data)
            # The handler's unit: this one, or the write unit WriteUnitMiddleware put in its place.
            unit = _UPDATE_UNIT.get() or uow
            if unit.in_transaction() or unit.events:
                await unit.commit()
            return result
        finally:
            handler_unit = _UPDATE_UNIT.get()
            _UPDATE_UNIT.reset(token)
            if handler_unit is not None and handler_unit is not uow:
                await handler_unit.close()
            await uow.close()


class WriteUnitMiddleware(BaseMiddleware):
    """For a handler flagged ``WRITES``: the update's read unit is left and a write unit takes its place."""

    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self.uow_factory = uow_factory

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        reading = data.get("uow")
        if not get_flag(data, "writes") or not isinstance(reading, UnitOfWork) or not reading.read_only:
            return await handler(event, data)
        await reading.close()
        writing = self.uow_factory.open()
        data["uow"] = writing
        # Seen by DatabaseMiddleware, which commits and closes it (the same task, so the same context).
        _UPDATE_UNIT.set(writing)
        return await handler(event, data)


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
