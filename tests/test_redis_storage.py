"""Issue 10: with ``[redis] url`` a conversation lives in Redis: a half-typed /new survives a restart.

Runs against the Redis of LEADBOT_TEST_REDIS_URL (CI sets it); without one it is skipped, saying so.
"""

from __future__ import annotations

import asyncio

import pytest
from aiogram.fsm.storage.base import BaseEventIsolation, StorageKey
from aiogram.fsm.storage.redis import RedisEventIsolation, RedisStorage
from sqlalchemy import select

from bot.config import Settings
from bot.factory import PersonIsolation, close_dispatcher, create_dispatcher, create_isolation, create_storage
from db.engine import Database
from db.models import Lead
from tests.conftest import SERVER_REDIS_URL, Harness, Team
from tests.fakes import RecordingSession, make_bot

pytestmark = pytest.mark.skipif(not SERVER_REDIS_URL, reason="needs a Redis server: set LEADBOT_TEST_REDIS_URL")


def _with_redis(settings: Settings) -> Settings:
    return settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": SERVER_REDIS_URL})})


def _bot_process(settings: Settings, database: Database) -> Harness:
    """What one ``leadbot run`` process builds: its own dispatcher and storage, from the settings."""
    session = RecordingSession()
    dp = create_dispatcher(settings, database)
    return Harness(bot=make_bot(session), session=session, dp=dp, settings=settings, uow_factory=dp["uow_factory"])


async def test_the_storage_and_the_locks_follow_the_settings(settings: Settings) -> None:
    storage = create_storage(_with_redis(settings))
    isolation = create_isolation(_with_redis(settings))
    try:
        assert isinstance(storage, RedisStorage)
        assert isinstance(isolation, PersonIsolation) and isinstance(isolation.shared, RedisEventIsolation)
    finally:
        await storage.close()
        await isolation.close()


async def test_one_person_is_handled_by_one_instance_at_a_time(settings: Settings) -> None:
    """Two instances' locks for the same person exclude each other through Redis; other people's don't."""
    first, second = create_isolation(_with_redis(settings)), create_isolation(_with_redis(settings))
    person = StorageKey(bot_id=42, chat_id=1004, user_id=1004)
    other = StorageKey(bot_id=42, chat_id=1005, user_id=1005)
    order: list[str] = []
    try:
        async with first.lock(person):
            waiting = asyncio.create_task(_hold(second, person, order, "second"))
            async with second.lock(other):
                order.append("other person, meanwhile")
            await asyncio.sleep(0.3)
            assert not waiting.done()
            order.append("first")
        await asyncio.wait_for(waiting, 10)
    finally:
        await first.close()
        await second.close()
    assert order == ["other person, meanwhile", "first", "second"]


def _key(team: Team) -> StorageKey:
    return StorageKey(bot_id=42, chat_id=team.mop.chat_id, user_id=team.mop.chat_id)


async def _hold(isolation: BaseEventIsolation, key: StorageKey, order: list[str], name: str) -> None:
    async with isolation.lock(key):
        order.append(name)


async def test_a_half_typed_new_lead_survives_a_restart(settings: Settings, database: Database, team: Team) -> None:
    redis_settings = _with_redis(settings)
    first = _bot_process(redis_settings, database)
    assert isinstance(first.dp.storage, RedisStorage)
    await first.dp.storage.set_state(_key(team), None)  # nothing left over from an earlier run
    await first.dp.storage.set_data(_key(team), {})
    try:
        await first.send(team.mop, "/new")
        await first.send(team.mop, "Иван Петров")
        await first.send(team.mop, "+998 90 123-45-67")
    finally:
        await close_dispatcher(first.dp)  # the process stops

    second = _bot_process(redis_settings, database)  # a new process, on another machine even
    try:
        second.updates = first.updates
        # The new process has sent nothing yet: the source keyboard is in the first one's chat.
        for text, data in first.last_buttons(team.mop.chat_id):
            if "Instagram" in text:
                await second.click(team.mop, data)
                break
        else:
            raise AssertionError("no source button")
        await second.send(team.mop, "50k")
        await second.press(team.mop, "Пропустить")
        await second.press(team.mop, "Пропустить")
        await second.press(team.mop, "Создать")
    finally:
        await close_dispatcher(second.dp)
    async with second.uow_factory() as uow:
        lead = (await uow.session.scalars(select(Lead))).one()
    assert (lead.client_name, lead.phone_number, lead.source, lead.budget) == (
        "Иван Петров",
        "+998901234567",
        "Instagram",
        50000,
    )
