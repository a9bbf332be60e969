"""The composition root: the running bot and the tests build the bot and dispatcher here, the same way."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage, StorageKey
from aiogram.fsm.storage.memory import MemoryStorage, SimpleEventIsolation

from bot.config import Settings
from bot.middlewares import (
    CommandLeavesConversationMiddleware,
    DatabaseMiddleware,
    KeepResponseModels,
    WriteUnitMiddleware,
)
from bot.once import HandledOnceMiddleware, UpdateLedger
from bot.sheets import create_exporter
from bot.units import create_uow_factory
from db.engine import Database
from db.uow import EventSink
from handlers import get_routers


def create_bot(settings: Settings, *, session: BaseSession | None = None, token: str | None = None) -> Bot:
    if token is None:
        if settings.bot.token is None:
            raise ValueError("bot.token is not set")
        token = settings.bot.token.get_secret_value()
    if session is None and settings.bot.api_server:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.bot.api_server))
    bot = Bot(
        token=token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )
    bot.session.middleware(KeepResponseModels())
    return bot


def create_storage(settings: Settings) -> BaseStorage:
    """Where conversation state lives: Redis when ``[redis] url`` is set (it survives a restart and is
    shared by every instance), else the process's memory."""
    if settings.redis.url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis.url)
    return MemoryStorage()


class PersonIsolation(BaseEventIsolation):
    """One person's updates one at a time, in arrival order in this process and across instances.

    The in-process lock is FIFO (asyncio), so updates that reached this instance keep their order; the
    Redis lock (``[redis] url``) then keeps another instance from handling the same person meanwhile.
    """

    def __init__(self, shared: BaseEventIsolation | None = None) -> None:
        self.local = SimpleEventIsolation()
        self.shared = shared

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        async with self.local.lock(key):
            if self.shared is None:
                yield
                return
            async with self.shared.lock(key):
                yield

    async def close(self) -> None:
        await self.local.close()
        if self.shared is not None:
            await self.shared.close()
            redis = getattr(self.shared, "redis", None)  # RedisEventIsolation leaves its client open
            if redis is not None:
                await redis.aclose(close_connection_pool=True)


def create_isolation(settings: Settings) -> BaseEventIsolation:
    if settings.redis.url:
        from aiogram.fsm.storage.redis import RedisEventIsolation

        return PersonIsolation(RedisEventIsolation.from_url(settings.redis.url))
    return PersonIsolation()


def create_update_ledger(settings: Settings) -> UpdateLedger | None:
    """Marks of handled updates, for several instances behind webhooks (``bot.once``): only with
    ``[redis] url`` and ``[bot] webhook_url``; polling hands each update to one process anyway."""
    if not (settings.redis.url and settings.bot.webhook_url and settings.bot.token):
        return None
    bot_id = int(settings.bot.token.get_secret_value().split(":", 1)[0])
    return UpdateLedger.from_url(settings.redis.url, bot_id)


async def close_dispatcher(dispatcher: Dispatcher) -> None:
    """Let go of what the dispatcher holds: its conversation storage, its per-person locks, its marks."""
    await dispatcher.storage.close()
    await dispatcher.fsm.events_isolation.close()
    ledger: UpdateLedger | None = dispatcher.workflow_data.get("update_ledger")
    if ledger is not None:
        await ledger.close()


def create_dispatcher(
    settings: Settings,
    database: Database,
    *,
    storage: BaseStorage | None = None,
    events_isolation: BaseEventIsolation | None = None,
    sink: EventSink | None = None,
) -> Dispatcher:
    """Routers, middlewares and services of the production bot.

    ``sink`` receives the domain events of each committed update (default: the notification outbox).

    Updates of different people run at once; the updates of one person (one user in one chat) run one
    after another in the order they arrived: the events isolation (``PersonIsolation``) takes a lock per
    person before the conversation state is read, so a tap followed at once by typing is handled against
    the step the tap led to (aiogram's ``FSMContextMiddleware`` takes that lock, in order, as each update
    starts); with Redis, across instances too.
    """
    uow_factory = create_uow_factory(settings, database, sink=sink)
    dispatcher = Dispatcher(
        storage=storage or create_storage(settings), events_isolation=events_isolation or create_isolation(settings)
    )
    dispatcher["settings"] = settings
    dispatcher["uow_factory"] = uow_factory
    # The Google Sheets export (None unless configured): the runner starts it, /sheets shows it.
    dispatcher["sheets"] = create_exporter(settings, uow_factory)
    ledger = create_update_ledger(settings)
    dispatcher["update_ledger"] = ledger
    if ledger is not None:  # inside the person's lock (aiogram's FSM middleware comes first), before the database
        dispatcher.update.outer_middleware(HandledOnceMiddleware(ledger))
    dispatcher.update.outer_middleware(DatabaseMiddleware(uow_factory, settings))
    write_units = WriteUnitMiddleware(uow_factory)
    dispatcher.message.middleware(write_units)
    dispatcher.callback_query.middleware(write_units)
    dispatcher.message.outer_middleware(CommandLeavesConversationMiddleware())
    dispatcher.include_routers(*get_routers())
    return dispatcher
