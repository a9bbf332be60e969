"""What a unit of work sends to SQLite, seen by SQLite itself (``sqlite3``'s trace callback).

Every statement on aiosqlite is a hand-off to its thread and back, and on a virtual machine a hand-off
costs more than the statement (``db.engine``). So nothing is sent that does nothing: a read unit sends
its SELECTs alone (no BEGIN, COMMIT or ROLLBACK), a write unit ``BEGIN IMMEDIATE`` … ``COMMIT`` and no
ROLLBACK after it, while a write unit that fails is still rolled back. And ``[database] one_core`` keeps
a process's threads, and the threads it starts later, on one core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.config import Settings
from db.engine import Database, open_database
from db.models import Lead
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from tests.conftest import Team
from tests.fake_bot_api import FakeBotAPI

pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def one_connection_each(settings: Settings) -> AsyncIterator[Database]:
    """The test's database with one reader connection, so the traced connection is the one used."""
    database = open_database(settings.database.url, read_pool=1)
    yield database
    await database.dispose()


async def _trace(database: Database, *, read: bool) -> list[str]:
    """Statements SQLite runs on the (only) reader or writer connection from now on."""
    seen: list[str] = []
    engine = database.read_engine if read else database.write_engine
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        await raw.driver_connection.set_trace_callback(lambda sql: seen.append(" ".join(sql.split())))
    seen.clear()  # what the checkout itself ran
    return seen


def _words(seen: list[str]) -> list[str]:
    return [sql.split()[0].upper() for sql in seen]


async def test_a_read_unit_sends_its_selects_and_nothing_else(
    one_connection_each: Database, settings: Settings, team: Team
) -> None:
    factory = UnitOfWorkFactory(one_connection_each, settings)
    seen = await _trace(one_connection_each, read=True)
    async with factory(read_only=True) as uow:
        assert await uow.users.sender(team.mop.tg.id) is not None
        await uow.session.scalar(select(Lead.id).where(Lead.id == 1))
        await uow.commit()
    assert _words(seen) == ["SELECT", "SELECT"], seen


async def test_a_write_unit_begins_immediate_commits_and_is_not_rolled_back_after(
    one_connection_each: Database, settings: Settings, team: Team
) -> None:
    factory = UnitOfWorkFactory(one_connection_each, settings)
    seen = await _trace(one_connection_each, read=False)
    # SQLite ignores a ROLLBACK outside a transaction, so the trace cannot show one sent after the
    # COMMIT; the driver's own calls can (each is a trip to aiosqlite's thread).
    calls: list[str] = []
    async with one_connection_each.write_engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
    for name in ("commit", "rollback"):
        method = getattr(driver, name)

        async def counted(method: Any = method, name: str = name) -> None:
            calls.append(name)
            await method()

        setattr(driver, name, counted)
    calls.clear()
    async with factory() as uow:
        await uow.leads.create(team.mop.user, LeadDraft("Пётр", "+998901234569", "Instagram"))
        await uow.commit()
    assert seen[0] == "BEGIN IMMEDIATE" and _words(seen)[-1] == "COMMIT", seen
    assert calls == ["commit"]


async def test_a_write_unit_that_fails_is_rolled_back(
    one_connection_each: Database, settings: Settings, team: Team
) -> None:
    factory = UnitOfWorkFactory(one_connection_each, settings)
    seen = await _trace(one_connection_each, read=False)
    with pytest.raises(RuntimeError):
        async with factory() as uow:
            await uow.leads.create(team.mop.user, LeadDraft("Пётр", "+998901234569", "Instagram"))
            raise RuntimeError("the handler failed")
    assert _words(seen)[-1] == "ROLLBACK", seen
    async with factory(read_only=True) as uow:
        assert (await uow.session.scalars(select(Lead.id))).all() == []


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(
    one_connection_each: Database,
) -> None:
    """The pool's reset still works when it is needed: a transaction left open is not kept."""
    seen = await _trace(one_connection_each, read=False)
    async with one_connection_each.write_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        await raw.driver_connection.execute("BEGIN IMMEDIATE")
        assert raw.driver_connection.in_transaction
        # Given back without the Connection's own commit or rollback: the driver still holds a transaction.
    async with one_connection_each.write_engine.connect() as connection:
        raw = await connection.get_raw_connection()
        assert not raw.driver_connection.in_transaction
    assert "ROLLBACK" in _words(seen), seen


def _affinity_probe(url: str, one_core: str) -> dict[str, Any]:
    code = """
import json, os, sys, threading
from bot.cli import keep_on_one_core
from bot.config import Settings
settings = Settings.model_validate({"database": {"url": sys.argv[1], "one_core": sys.argv[2] == "true"}})
before = sorted(os.sched_getaffinity(0))
keep_on_one_core(settings)
seen = {}
thread = threading.Thread(target=lambda: seen.update(thread=sorted(os.sched_getaffinity(0))))
thread.start(); thread.join()
print(json.dumps({"before": before, "main": sorted(os.sched_getaffinity(0)), **seen}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, url, one_core], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="the OS has no CPU affinity (not Linux)")
def test_one_core_keeps_the_process_and_its_later_threads_on_one_core(tmp_path: Path) -> None:
    sqlite = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    pinned = _affinity_probe(sqlite, "true")
    if len(pinned["before"]) < 2:
        # One core allowed already: nothing to choose, nothing changed.
        assert pinned["main"] == pinned["before"] == pinned["thread"]
        return
    assert len(pinned["main"]) == 1 and pinned["main"][0] in pinned["before"]
    assert pinned["thread"] == pinned["main"]
    # Off, or on PostgreSQL (no driver threads): every core stays allowed.
    assert _affinity_probe(sqlite, "false")["main"] == pinned["before"]
    assert _affinity_probe("postgresql+asyncpg://u@127.0.0.1/x", "true")["main"] == pinned["before"]


def test_leadbot_run_serves_on_uvloop_and_freezes_what_start_up_built_once_it_is_built(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """A full garbage collection then walks what the bot allocates, not the 400,000 objects of its
    libraries, dispatcher and HTTP app: ``leadbot run`` hands ``run_bot`` the freeze as its ``ready``."""
    import asyncio

    import uvloop

    import bot.doctor
    import bot.runner
    from bot.cli import freeze_startup_objects, run_command

    handed: list[Any] = []
    loops: list[type] = []

    async def run_bot(_settings: Settings, *, ready: Any = None) -> None:
        handed.append(ready)
        loops.append(type(asyncio.get_running_loop()))

    async def verify_token(_settings: Settings) -> Any:
        return bot.doctor.TokenCheck(username="leadbot")  # what Telegram's getMe gives an accepted token

    monkeypatch.setattr(bot.runner, "run_bot", run_bot)
    monkeypatch.setattr(bot.doctor, "verify_token", verify_token)
    quiet = settings.model_copy(update={"database": settings.database.model_copy(update={"one_core": False})})
    assert run_command(quiet, None) == 0  # type: ignore[arg-type]
    assert handed == [freeze_startup_objects]
    assert loops == [uvloop.Loop]  # bot.cli.run_serving: the serving commands run on uvloop


async def test_run_bot_is_ready_once_its_dispatcher_and_http_app_are_built(
    settings: Settings, fake_bot_api: FakeBotAPI, free_tcp_port: int
) -> None:
    """``ready`` comes after the dispatcher and the HTTP app exist and before the first update, so the
    freeze leaves them out of the collector: neither is among the objects it still tracks."""
    import asyncio
    import gc

    from aiogram import Dispatcher

    from bot.cli import freeze_startup_objects
    from bot.runner import run_bot

    live = settings.model_copy(
        update={
            "bot": settings.bot.model_copy(
                update={"token": SecretStr("42:TEST-TOKEN"), "api_server": fake_bot_api.base_url}
            ),
            "api": settings.api.model_copy(update={"enabled": True, "port": free_tcp_port}),
        }
    )
    readied: list[bool] = []

    def ready() -> None:
        readied.append(started.done())
        freeze_startup_objects()

    started: asyncio.Future[Dispatcher] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bot(live, handle_signals=False, started=started, ready=ready))
    try:
        done, _ = await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # the bot died while starting: show why
        dispatcher = started.result()
        tracked = gc.get_objects()  # every generation the collector walks; frozen objects are not in it
        assert readied == [False]  # once, before polling began
        assert not any(o is dispatcher for o in tracked)
        assert not any(o is dispatcher.workflow_data for o in tracked)
        fresh = Dispatcher()  # built after the freeze: tracked as usual
        assert any(o is fresh for o in gc.get_objects())
    finally:
        gc.unfreeze()
        if started.done():
            await asyncio.wait_for(started.result().stop_polling(), timeout=30)
        await asyncio.wait_for(task, timeout=30)
