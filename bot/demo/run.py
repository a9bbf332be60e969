"""``leadbot demo``: the real bot, a seeded temporary database, and the page that stands in for Telegram.

The bot is started exactly as ``leadbot run`` starts it (``bot.runner.run_bot``: migrations, the
production dispatcher, the delivery worker, the reminder scheduler); only ``[bot] api_server`` points
at the stand-in (``bot.demo.server``) and the token is a dummy one that server accepts. Nothing leaves
127.0.0.1 and nothing is kept: the database lives in a temporary folder removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram import Dispatcher

from bot.config import Settings
from bot.demo.seed import NEWCOMERS, TEAM, Member, seed
from bot.demo.server import DemoTelegram, Person
from db.enums import Role

log = logging.getLogger(__name__)

DEMO_TOKEN = "123456:DEMO-not-a-real-token-LeadBot-sandbox"
DEMO_BOT_ID = 123456
DEMO_BOT_USERNAME = "LeadBotDemoBot"

ROLE_CAPTIONS = {
    Role.ADMIN: "Администратор",
    Role.ROP: "РОП — руководитель продаж",
    Role.MOP: "МОП — менеджер по лидам",
    Role.SELLER: "Продажник",
    Role.FINANCE: "Финансист",
}


def demo_people() -> list[Person]:
    def person(member: Member, caption: str) -> Person:
        return Person(member.telegram_id, member.first_name, member.last_name, caption)

    team = [person(member, ROLE_CAPTIONS[member.role]) for member in TEAM]
    return team + [person(member, "Ещё не в команде") for member in NEWCOMERS]


def demo_settings(database_url: str, api_server: str) -> Settings:
    """The demo's settings: nothing read from a config file, reminders on a fast clock, all day."""
    return Settings(
        bot={"token": DEMO_TOKEN, "api_server": api_server},
        database={"url": database_url},
        access={"admins": [member.telegram_id for member in TEAM if member.role is Role.ADMIN]},
        reminders={
            "tick": "10s",
            "new_lead_after": "1m",
            "repeat_every": "2m",
            "overdue_escalate_after": "10m",
            "working_hours": "00:00-00:00",
        },
        notifications={"poll_interval": "1s"},
        api={"enabled": False},
        redis={"url": None},
    )


@dataclass
class RunningDemo:
    server: DemoTelegram
    settings: Settings
    dispatcher: Dispatcher
    bot_task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return self.server.base_url + "/"


@contextlib.asynccontextmanager
async def running_demo(port: int = 0, *, handle_signals: bool = False) -> AsyncIterator[RunningDemo]:
    """The demo up: the server on 127.0.0.1:``port`` (0: a free one), the bot polling it.

    On leaving, the bot stops polling (unless a signal stopped it already), then the server, and the
    temporary database is removed.
    """
    from bot.runner import run_bot
    from db.engine import open_database
    from db.migrate import upgrade

    server = DemoTelegram(DEMO_TOKEN, demo_people(), bot_id=DEMO_BOT_ID, bot_username=DEMO_BOT_USERNAME)
    with tempfile.TemporaryDirectory(prefix="leadbot-demo-") as folder:
        database_url = f"sqlite+aiosqlite:///{Path(folder) / 'demo.db'}"
        try:
            # The port first: a taken one is reported before anything else is done.
            await server.start(port)
            database = open_database(database_url)
            try:
                await upgrade(database.write_engine)
                await seed(database)
            finally:
                await database.dispose()
            settings = demo_settings(database_url, server.base_url)
            started: asyncio.Future[Dispatcher] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(run_bot(settings, handle_signals=handle_signals, started=started))
            waiting: set[asyncio.Future[Any]] = {started, task}
            done, _ = await asyncio.wait(waiting, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # the bot died while starting: show why
                raise RuntimeError("the bot stopped while starting")
            if not done:
                task.cancel()
                raise RuntimeError("the bot did not start within 60 s")
            demo = RunningDemo(server, settings, started.result(), task)
            try:
                yield demo
            finally:
                if not task.done():
                    with contextlib.suppress(RuntimeError, TimeoutError):  # polling already stopping
                        await asyncio.wait_for(demo.dispatcher.stop_polling(), timeout=30)
                    # The bot closes its worker, session and database; wait_for cancels it if it hangs,
                    # so the caller is never left waiting.
                    await asyncio.wait_for(task, timeout=30)
        finally:
            await server.stop()


async def serve(port: int, *, open_browser: bool) -> None:
    """What ``leadbot demo`` runs: up until Ctrl-C (aiogram's polling handles SIGINT and SIGTERM)."""
    # The scheduler's every tick is a line at INFO: keep the console to what the bot does.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    async with running_demo(port, handle_signals=True) as demo:
        print(f"LeadBot demo: open {demo.url} (Ctrl-C stops it; nothing is kept)", flush=True)
        if open_browser:
            import webbrowser

            await asyncio.to_thread(webbrowser.open, demo.url)
        await demo.bot_task
