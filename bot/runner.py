"""Starting and stopping the running bot: migrations, then polling (and the services beside it)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiogram import Dispatcher

from bot.config import Settings
from bot.delivery import DeliveryWorker
from bot.factory import create_bot, create_dispatcher
from bot.scheduler import create_scheduler, stop_scheduler
from db.engine import open_database
from db.migrate import upgrade
from db.reminders import ReminderJobs

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)


async def run_bot(
    settings: Settings,
    *,
    handle_signals: bool = True,
    started: asyncio.Future[Dispatcher] | None = None,
) -> None:
    """Run until stopped: by a signal, or (in tests, ``handle_signals=False``) ``dispatcher.stop_polling()``.

    ``started`` receives the dispatcher once the bot is up, so an end-to-end test can drive and stop
    the very same process the ``leadbot run`` command starts.
    """
    database = open_database(settings.database.url, echo=settings.database.echo)
    await upgrade(database.write_engine)
    bot = create_bot(settings)
    dispatcher = create_dispatcher(settings, database)
    delivery = DeliveryWorker(bot, dispatcher["uow_factory"], settings.notifications)
    scheduler = create_scheduler(settings, ReminderJobs(dispatcher["uow_factory"], settings))
    api_server: uvicorn.Server | None = None
    api_task: asyncio.Task[None] | None = None
    if settings.api.enabled:
        # The HTTP API in the same event loop and over the same database; polling owns the signals.
        from api.app import build_server, create_app

        api_server = build_server(create_app(settings, database), settings, embedded=True)
        api_task = asyncio.create_task(api_server.serve(), name="leadbot-api")
    try:
        me = await bot.get_me()
        log.info("LeadBot started as @%s", me.username)
        scheduler.start()
        delivery.start()
        if started is not None:
            started.set_result(dispatcher)
        await dispatcher.start_polling(bot, handle_signals=handle_signals)
    finally:
        # Finish the notifications on their way before the session closes (nothing is left "sending").
        await delivery.stop()
        stop_scheduler(scheduler)
        if api_server is not None and api_task is not None:
            api_server.should_exit = True
            await api_task
        await bot.session.close()
        await dispatcher.storage.close()
        await database.dispose()
