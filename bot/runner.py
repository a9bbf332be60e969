"""Starting and stopping the running bot: migrations, then polling (and the services beside it)."""

from __future__ import annotations

import logging

from bot.config import Settings
from bot.factory import create_bot, create_dispatcher
from db.engine import create_engine, create_sessionmaker
from db.migrate import upgrade

log = logging.getLogger(__name__)


async def run_bot(settings: Settings) -> None:
    engine = create_engine(settings.database.url, echo=settings.database.echo)
    await upgrade(engine)
    sessionmaker = create_sessionmaker(engine)
    bot = create_bot(settings)
    dispatcher = create_dispatcher(settings, sessionmaker)
    try:
        me = await bot.get_me()
        log.info("LeadBot started as @%s", me.username)
        await dispatcher.start_polling(bot, handle_signals=True)
    finally:
        await bot.session.close()
        await engine.dispose()
