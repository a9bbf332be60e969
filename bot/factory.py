"""The composition root: the running bot and the tests build the bot and dispatcher here, the same way."""

from __future__ import annotations

from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from sqlalchemy.ext.asyncio import async_sessionmaker

from bot.config import Settings
from bot.middlewares import CommandLeavesConversationMiddleware, DatabaseMiddleware
from bot.notifications import OutboxNotifier
from db.uow import EventSink, UnitOfWorkFactory
from handlers import get_routers


def create_bot(settings: Settings, *, session: BaseSession | None = None, token: str | None = None) -> Bot:
    if token is None:
        if settings.bot.token is None:
            raise ValueError("bot.token is not set")
        token = settings.bot.token.get_secret_value()
    if session is None and settings.bot.api_server:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.bot.api_server))
    return Bot(
        token=token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def create_uow_factory(
    settings: Settings, sessionmaker: async_sessionmaker[Any], *, sink: EventSink | None = None
) -> UnitOfWorkFactory:
    """The one way every interface (bot, API, jobs) gets units of work, so all emit the same events.

    ``sink`` defaults to the notification outbox (``bot.notifications.OutboxNotifier``).
    """
    return UnitOfWorkFactory(sessionmaker, settings, sink if sink is not None else OutboxNotifier(settings))


def create_dispatcher(
    settings: Settings,
    sessionmaker: async_sessionmaker[Any],
    *,
    storage: BaseStorage | None = None,
    sink: EventSink | None = None,
) -> Dispatcher:
    """Routers, middlewares and services of the production bot.

    ``sink`` receives the domain events of each committed update (default: the notification outbox).
    """
    uow_factory = create_uow_factory(settings, sessionmaker, sink=sink)
    dispatcher = Dispatcher(storage=storage or MemoryStorage())
    dispatcher["settings"] = settings
    dispatcher["uow_factory"] = uow_factory
    dispatcher.update.outer_middleware(DatabaseMiddleware(uow_factory, settings))
    dispatcher.message.outer_middleware(CommandLeavesConversationMiddleware())
    dispatcher.include_routers(*get_routers())
    return dispatcher
