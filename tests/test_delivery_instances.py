"""Issue 10: several instances' delivery workers on one database send as one, within the bot token's limits.

Telegram's limits belong to the token, not to a process: two workers each pacing itself at 25/s would
send 50/s together. Only the holder of the delivery turn sends; a stopped worker hands it back at once,
a killed one's turn lapses and another takes over.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.delivery import INTERRUPTED, TELEGRAM_TURN, DeliveryWorker, VirtualClock
from bot.factory import create_bot, create_uow_factory
from db.engine import Database, open_database
from db.enums import OutboxStatus
from db.models import IntegrationState, OutboxMessage
from db.uow import UnitOfWorkFactory
from tests.fake_bot_api import FakeBotAPI, max_per_window
from tests.fakes import make_bot
from tests.test_delivery import CountingSession, enqueue, rows


@pytest.fixture
async def second_database(settings: Settings, database: Database) -> AsyncIterator[Database]:
    """A second engine on the same database: what another ``leadbot run`` process would open."""
    other = open_database(settings.database.url)
    try:
        yield other
    finally:
        await other.dispose()


async def test_two_instances_together_stay_within_the_tokens_limits(
    settings: Settings, database: Database, second_database: Database
) -> None:
    first_factory = create_uow_factory(settings, database)
    second_factory = create_uow_factory(settings, second_database)
    await enqueue(first_factory, [(20_000 + n, f"n{n}") for n in range(45)])
    notifications = settings.notifications.model_copy(update={"rate_per_second": 25.0})
    sends: list[tuple[str, float]] = []
    async with FakeBotAPI(enforce_limits=True) as server:
        pointed = settings.model_copy(update={"bot": settings.bot.model_copy(update={"api_server": server.base_url})})
        bots = [create_bot(pointed), create_bot(pointed)]
        try:
            workers = [
                DeliveryWorker(bot, factory, notifications)
                for bot, factory in zip(bots, (first_factory, second_factory), strict=True)
            ]
            for name, worker in zip("ab", workers, strict=True):
                worker.on_send = lambda _row, _chat, name=name: sends.append((name, asyncio.get_running_loop().time()))
            await asyncio.wait_for(asyncio.gather(*(w.run(until_idle=True) for w in workers)), 60)
        finally:
            for bot in bots:
                await bot.session.close()
        hits = server.limit_hits
        delivered = Counter(r.text for r in server.sent())

    assert hits == 0  # alone each paces itself at 25/s; side by side without the turn they made ~50/s
    assert max_per_window(sorted(at for _, at in sends), 1.0) <= 26
    assert delivered == Counter(f"n{n}" for n in range(45))  # each once
    assert all(row.status == OutboxStatus.SENT for row in await rows(first_factory))
    async with first_factory(read_only=True) as uow:  # both stopped: the turn was handed back
        holder = await uow.session.scalar(
            select(IntegrationState.sender_id).where(IntegrationState.integration == TELEGRAM_TURN)
        )
    assert holder is None


async def test_a_killed_senders_turn_lapses_and_another_instance_finishes(
    settings: Settings, database: Database, second_database: Database
) -> None:
    clock = VirtualClock()
    session = CountingSession(clock)
    first_factory = create_uow_factory(settings, database)
    second_factory: UnitOfWorkFactory = create_uow_factory(settings, second_database)
    await enqueue(first_factory, [(21_000 + n, f"k{n}") for n in range(10)])
    session.block_text = "k3"
    killed = DeliveryWorker(make_bot(session), first_factory, settings.notifications, clock=clock)
    killed.start()
    await asyncio.wait_for(session.blocked.wait(), 10)
    await killed.abort()  # SIGKILL with k3 on its way: its turn is still on record
    killed_at = clock.monotonic()
    session.block_text = None
    sent_before = len(session.times)

    survivor = DeliveryWorker(make_bot(session), second_factory, settings.notifications, clock=clock)
    await asyncio.wait_for(survivor.run(until_idle=True), 30)

    takeover = session.times[sent_before][0]
    assert takeover - killed_at >= survivor.turn.total_seconds() - 1  # not before the dead turn lapsed
    by_text = {row.payload["text"]: row for row in await rows(first_factory)}
    accepted = session.accepted_per_text()
    assert by_text["k3"].status == OutboxStatus.FAILED and by_text["k3"].last_error == INTERRUPTED
    for text, row in by_text.items():
        if row.status == OutboxStatus.SENT:
            assert accepted[text] == 1, text
        else:  # on its way or sent but not recorded at the kill: reported, never sent again
            assert row.last_error == INTERRUPTED and accepted[text] <= 1, text
    assert sum(row.status == OutboxStatus.SENT for row in by_text.values()) >= 8


async def test_a_worker_without_the_turn_sends_nothing_until_it_is_handed_back(
    settings: Settings, database: Database
) -> None:
    session = CountingSession(VirtualClock())  # only records; the worker runs on the real clock
    factory = create_uow_factory(settings, database)
    await enqueue(factory, [(22_000, "held")])
    async with factory() as uow:  # another instance is sending, its turn good for a minute
        now = datetime.now(UTC)
        assert await uow.integrations.take_turn(TELEGRAM_TURN, "elsewhere", now=now, until=now + timedelta(minutes=1))
        await uow.commit()
    notifications = settings.notifications.model_copy(update={"poll_interval": timedelta(seconds=0.1)})
    worker = DeliveryWorker(make_bot(session), factory, notifications)
    worker.start()
    try:
        await asyncio.sleep(1.0)  # about ten looks, each finding the turn taken
        assert session.times == [] and not worker.has_turn
        async with factory() as uow:  # the other instance stops and hands the turn back
            await uow.integrations.end_turn(TELEGRAM_TURN, "elsewhere")
            await uow.commit()
        for _ in range(100):
            if session.accepted:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert [m.text for m in session.accepted] == ["held"]
    async with factory(read_only=True) as uow:
        statuses = (await uow.session.scalars(select(OutboxMessage.status))).all()
    assert statuses == [OutboxStatus.SENT]
