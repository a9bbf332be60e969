"""Starting and stopping the running bot: migrations, then polling (and the services beside it)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher

from bot import assignment_jobs
from bot.config import Settings
from bot.delivery import DeliveryWorker
from bot.factory import close_dispatcher, create_bot, create_dispatcher
from bot.integrations import create_sync_workers
from bot.scheduler import create_scheduler, stop_scheduler
from bot.sheets import SheetsExporter
from db.engine import open_database
from db.migrate import upgrade
from db.reminders import ReminderJobs

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger(__name__)


async def run_bot(
    settings: Settings,
    *,
    handle_signals: bool = True,
    started: asyncio.Future[Dispatcher] | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run until stopped: by a signal, or (in tests, ``handle_signals=False``) ``dispatcher.stop_polling()``
    in polling mode or ``stop`` in webhook mode.

    ``started`` receives the dispatcher once the bot is up, so an end-to-end test can drive and stop
    the very same process the ``leadbot run`` command starts. ``ready`` is called once everything the
    bot runs on is built (the database, the dispatcher, the HTTP API) and Telegram has answered, before
    the first update: ``leadbot run`` freezes the start-up objects there (``bot.cli``).
    """
    database = open_database(settings.database.url, echo=settings.database.echo)
    await upgrade(database.write_engine)
    bot = create_bot(settings)
    dispatcher = create_dispatcher(settings, database)
    delivery = DeliveryWorker(bot, dispatcher["uow_factory"], settings.notifications)
    # A notification queued in this process goes out at once, not at the worker's next poll.
    dispatcher["uow_factory"].on_outbox = delivery.wake
    scheduler = create_scheduler(settings, ReminderJobs(dispatcher["uow_factory"], settings))
    assignment_jobs.schedule(scheduler, settings, dispatcher["uow_factory"])
    sheets: SheetsExporter | None = dispatcher["sheets"]
    # amoCRM, Bitrix24, Meta's Conversions API: each configured one empties its queue here.
    sync_workers = create_sync_workers(settings, dispatcher["uow_factory"])
    dispatcher["sync_workers"] = {worker.name: worker for worker in sync_workers}
    api_server: uvicorn.Server | None = None
    api_app: FastAPI | None = None
    api_task: asyncio.Task[None] | None = None
    if settings.api.enabled:
        # The HTTP API in the same event loop and over the same database; polling owns the signals.
        from api.app import build_server, create_app

        api_app = create_app(settings, database)
        api_app.state.uow_factory.on_outbox = delivery.wake
        if settings.meta.enabled:
            api_app.state.meta_fetcher.kick()  # Meta leads recorded before a restart
        from bot.webhook import mount_webhook, shares_the_api_server

        if shares_the_api_server(settings):  # one port for both: the updates are a route of the API
            mount_webhook(api_app, settings, dispatcher, bot)
        api_server = build_server(api_app, settings, embedded=True)
        api_task = asyncio.create_task(api_server.serve(), name="leadbot-api")
    try:
        me = await bot.get_me()
        log.info("LeadBot started as @%s", me.username)
        if ready is not None:
            ready()
        scheduler.start()
        delivery.start()
        if sheets is not None:
            sheets.start()
        for worker in sync_workers:
            worker.start()
        if settings.bot.webhook_url:
            await _serve_webhook(settings, dispatcher, bot, started, stop or asyncio.Event(), handle_signals)
        else:
            if started is not None:
                # Told from polling's own startup: by then stop_polling() stops it (told earlier, it would
                # find polling not started yet and the bot would poll on).
                async def polling_started() -> None:
                    if not started.done():
                        started.set_result(dispatcher)

                dispatcher.startup.register(polling_started)
            await dispatcher.start_polling(bot, handle_signals=handle_signals)
    finally:
        # Finish the notifications on their way before the session closes (nothing is left "sending").
        await delivery.stop()
        await stop_scheduler(scheduler)
        if sheets is not None:
            await sheets.stop()
        for worker in sync_workers:
            await worker.stop()
            await worker.adapter.aclose()
        if api_server is not None and api_task is not None and api_app is not None:
            from api.app import close_app

            api_server.should_exit = True
            await api_task
            await close_app(api_app)
        await bot.session.close()
        await close_dispatcher(dispatcher)
        await database.dispose()


async def _serve_webhook(
    settings: Settings,
    dispatcher: Dispatcher,
    bot: Bot,
    started: asyncio.Future[Dispatcher] | None,
    stop: asyncio.Event,
    handle_signals: bool,
) -> None:
    """Webhook mode: Telegram posts each update to ``[bot] webhook_url``; this process listens behind it.

    aiogram's request handler checks ``X-Telegram-Bot-Api-Secret-Token`` (a wrong or missing one gets
    401) and answers 200 once the update is handled (aiogram gives up waiting after 55 s and finishes it
    in the background), so an update whose instance dies is posted again by Telegram instead of being
    lost. Posts are handled concurrently, one person's in order (``PersonIsolation``). The webhook is
    (re)set at every start; pending updates are kept.
    """
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler
    from aiohttp import web

    from bot.webhook import shares_the_api_server

    url = settings.bot.webhook_url
    secret = settings.bot.webhook_secret
    assert url is not None and secret is not None  # the settings refuse one without the other
    runner: web.AppRunner | None = None
    if shares_the_api_server(settings):
        host, port = settings.api.host, settings.api.port  # the API's server takes the posts (bot.webhook)
        await _until_listening(host, port)  # Telegram is told the address only once it answers there
    else:
        app = web.Application(client_max_size=1024 * 1024)
        # Answered once the update is handled, not before: an instance that dies meanwhile leaves the post
        # unanswered, and Telegram posts the update again (to another instance behind the proxy); bot.once
        # keeps one that was handled from being handled twice.
        SimpleRequestHandler(
            dispatcher, bot, handle_in_background=False, secret_token=secret.get_secret_value()
        ).register(app, path=urlsplit(url).path or "/")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = settings.bot.listen_address
        site = web.TCPSite(runner, host, port)
        await site.start()
    try:
        await bot.set_webhook(
            url,
            secret_token=secret.get_secret_value(),
            allowed_updates=dispatcher.resolve_used_update_types(),
        )
        log.info("LeadBot listens for Telegram on %s:%s (webhook %s)", host, port, urlsplit(url).netloc)
        if handle_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        if started is not None:
            started.set_result(dispatcher)
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()


async def _until_listening(host: str, port: int, *, seconds: float = 30.0) -> None:
    """Wait until something accepts connections on ``host:port`` (the API's server, starting beside)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
