"""db.reader: the same rows whichever way they are read, inside the update's own transaction.

Hot paths read with ``Reader`` straight on the sqlite3 connection (the default engine) or through the
session (the thread driver, other databases). These pin that both give the same Python values, that
a read sees what the update changed before it, and that the acting user adopted from a row behaves
like one the session loaded.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import FrozenInstanceError
from datetime import UTC

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from db.engine import create_engine, create_sessionmaker
from db.models import Comment, Lead, User
from db.repositories.leads import LeadDraft
from db.repositories.users import USER_COLUMNS
from db.rows import UserRow
from db.sqlite_driver import InlineConnection
from db.uow import UnitOfWorkFactory
from tests.conftest import Team


@pytest.fixture(params=["on_loop", "thread"])
async def any_factory(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[UnitOfWorkFactory]:
    engine = create_engine(settings.database.url, on_loop=request.param == "on_loop")
    try:
        yield UnitOfWorkFactory(create_sessionmaker(engine), settings)
    finally:
        await engine.dispose()


async def _lead(factory: UnitOfWorkFactory, team: Team) -> int:
    async with factory() as uow:
        lead = await uow.leads.create(
            team.mop.user, LeadDraft("Анна <b>Ким</b>", "+998 90 123 45 67", "Instagram", 1500.5, None, team.seller.id)
        )
        await uow.leads.add_comment(team.seller.user, lead.id, "Первый звонок")
        await uow.commit()
        return lead.id


async def test_card_values_are_the_orms_values(any_factory: UnitOfWorkFactory, team: Team) -> None:
    lead_id = await _lead(any_factory, team)
    async with any_factory() as uow:
        card = await uow.leads.card(team.admin.user, lead_id)
        lead = (await uow.session.execute(select(Lead).where(Lead.id == lead_id))).scalar_one()
        comment = (await uow.session.execute(select(Comment).where(Comment.lead_id == lead_id))).scalar_one()
    row = card.lead
    assert (row.client_name, row.phone_number, row.status, row.budget) == (
        lead.client_name,
        lead.phone_number,
        lead.status,
        lead.budget,
    )
    assert (row.created_at, row.updated_at) == (lead.created_at, lead.updated_at)
    assert row.created_at.tzinfo is UTC and row.updated_at.tzinfo is UTC
    assert row.assigned_to is not None and row.assigned_to.full_name == "Продажник Иванов"
    assert row.created_by is not None and row.created_by.id == team.mop.id
    assert [(c.text, c.created_at, c.created_by and c.created_by.id) for c in card.comments] == [
        (comment.text, comment.created_at, team.seller.id)
    ]
    assert (card.comments_total, card.history_total, card.followups_total) == (1, 2, 0)


async def test_a_read_sees_the_updates_own_pending_changes(any_factory: UnitOfWorkFactory, team: Team) -> None:
    lead_id = await _lead(any_factory, team)
    async with any_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None
        lead.client_name = "Переименован"  # not flushed yet: the reader flushes first, as autoflush would
        card = await uow.leads.card(team.admin.user, lead_id)
        assert card.lead.client_name == "Переименован"
    async with any_factory() as uow:  # and without a commit nothing stayed
        card = await uow.leads.card(team.admin.user, lead_id)
        assert card.lead.client_name == "Анна <b>Ким</b>"


async def test_the_sender_is_a_frozen_row_with_the_orms_values(any_factory: UnitOfWorkFactory, team: Team) -> None:
    async with any_factory() as uow:
        sender = await uow.users.sender(team.seller.tg.id)
        assert isinstance(sender, UserRow)
        assert [getattr(sender, column.key) for column in USER_COLUMNS] == [
            getattr(team.seller.user, column.key) for column in USER_COLUMNS
        ]
        assert sender.full_name == team.seller.user.full_name and sender.created_at.tzinfo is UTC
        with pytest.raises(FrozenInstanceError):
            sender.language = "en"  # type: ignore[misc]
        assert await uow.users.sender(424_242) is None


async def test_a_user_read_as_a_row_and_adopted_is_the_sessions_own(any_factory: UnitOfWorkFactory, team: Team) -> None:
    async with any_factory() as uow:
        actor = await uow.users.by_telegram_id(team.seller.tg.id)
        assert actor is not None
        state = inspect(actor)
        assert state.persistent and not state.modified and actor not in uow.session.dirty
        assert [getattr(actor, column.key) for column in USER_COLUMNS] == [
            getattr(team.seller.user, column.key) for column in USER_COLUMNS
        ]
        assert actor.created_at.tzinfo is UTC and actor.is_active is True
        # The session hands out this same object from then on, and a change to it is written at commit.
        assert await uow.session.get(User, actor.id) is actor
        assert await uow.users.by_telegram_id(team.seller.tg.id) is actor
        actor.language = "en"
        await uow.commit()
    async with any_factory() as uow:
        again = await uow.session.get(User, team.seller.id)
        assert again is not None and again.language == "en"


# ---- the unit of work's own transaction (SQLite on the loop: reader and session share it) ----


async def test_reads_and_writes_of_an_update_are_one_transaction(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    lead_id = await _lead(uow_factory, team)
    with pytest.raises(RuntimeError):
        async with uow_factory() as uow:
            await uow.leads.card(team.admin.user, lead_id)  # the reader begins the transaction
            lead = await uow.session.get(Lead, lead_id)  # the session joins it
            assert lead is not None
            lead.notes = "в той же транзакции"
            assert (await uow.leads.card(team.admin.user, lead_id)).lead.notes == "в той же транзакции"
            raise RuntimeError("the update failed")
    async with uow_factory() as uow:
        assert (await uow.leads.card(team.admin.user, lead_id)).lead.notes is None
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None
        lead.notes = "записано"
        await uow.commit()
    async with uow_factory() as uow:
        assert (await uow.leads.card(team.admin.user, lead_id)).lead.notes == "записано"


async def test_a_unit_that_only_reads_lets_the_connection_and_the_lock_go(
    uow_factory: UnitOfWorkFactory, settings: Settings, team: Team
) -> None:
    for _ in range(3):  # one connection in the pool: a unit that kept it would make the next one wait
        async with asyncio.timeout(5):
            async with uow_factory() as uow:
                assert await uow.users.by_telegram_id(team.seller.tg.id) is not None
    other = sqlite3.connect(settings.database.url.removeprefix("sqlite+aiosqlite:///"), timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock is free at once
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_read_waits_for_another_process_lock_without_freezing_the_loop(
    uow_factory: UnitOfWorkFactory, settings: Settings, team: Team
) -> None:
    path = settings.database.url.removeprefix("sqlite+aiosqlite:///")
    locked, release = threading.Event(), threading.Event()

    def other_process() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(10)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while ticks < 20:
            await asyncio.sleep(0.005)
            ticks += 1
        release.set()  # the loop kept running meanwhile: let the other process finish

    thread = threading.Thread(target=other_process, daemon=True)
    thread.start()
    try:
        assert locked.wait(10)

        async def read() -> User | None:
            async with uow_factory() as uow:
                user = await uow.users.by_telegram_id(team.seller.tg.id)  # BEGIN IMMEDIATE meets the lock
                assert release.is_set(), "read while another process held the write lock"
                return user

        user, _ = await asyncio.gather(read(), ticker())
    finally:
        release.set()
        thread.join(10)
    assert user is not None and ticks == 20


async def test_units_that_overlap_take_the_one_connection_in_turn(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    order: list[str] = []
    first_has_it = asyncio.Event()

    async def first() -> None:
        async with uow_factory() as uow:
            assert await uow.users.by_telegram_id(team.seller.tg.id) is not None
            order.append("first in")
            first_has_it.set()
            await asyncio.sleep(0.05)  # an update awaiting Telegram while it holds the connection
            order.append("first out")

    async def second() -> None:
        await first_has_it.wait()
        async with uow_factory() as uow:  # nothing idle in the pool: it queues for the connection
            order.append("second in")
            assert await uow.users.by_telegram_id(team.mop.tg.id) is not None

    async with asyncio.timeout(5):
        await asyncio.gather(first(), second())
    assert order == ["first in", "first out", "second in"]


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(
    engine: AsyncEngine, settings: Settings, team: Team
) -> None:
    connection = await engine.connect()
    driver = (await connection.get_raw_connection()).driver_connection
    assert isinstance(driver, InlineConnection)
    await driver.execute("BEGIN IMMEDIATE")  # behind SQLAlchemy's back: it sees no transaction to end
    await driver.execute("UPDATE users SET first_name = 'никогда' WHERE id = ?", (team.seller.id,))
    await connection.close()
    assert not driver.in_transaction
    other = sqlite3.connect(settings.database.url.removeprefix("sqlite+aiosqlite:///"), timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock went with the rollback
        other.execute("ROLLBACK")
        (name,) = other.execute("SELECT first_name FROM users WHERE id = ?", (team.seller.id,)).fetchone()
    finally:
        other.close()
    assert name != "никогда"


async def test_a_unit_reconnects_when_the_pooled_connection_was_invalidated(
    engine: AsyncEngine, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    connection = await engine.connect()
    await connection.invalidate()  # as after a disconnect: the next checkout has to connect, which awaits
    await connection.close()
    async with asyncio.timeout(5):
        async with uow_factory() as uow:
            assert await uow.users.sender(team.seller.tg.id) is not None
        async with uow_factory() as uow:  # and the new connection is the pool's idle one again
            assert await uow.users.sender(team.mop.tg.id) is not None
