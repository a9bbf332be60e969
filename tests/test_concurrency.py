"""Issue 9: no update holds the database while it waits on Telegram; different people are served at once,
one person's updates in the order they arrived; reads never take the write lock.

The fake Telegram here answers after a short round trip (``SlowSession``), as the real one does, so
updates really overlap: that is what the in-process tests with an instant fake cannot show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot
from aiogram.fsm.storage.memory import DisabledEventIsolation
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from bot.config import Settings
from bot.factory import create_dispatcher
from db.engine import Database
from db.enums import LeadStatus, StatusCode
from db.models import Lead
from db.repositories import LeadDraft
from keyboards.callbacks import LeadAction, LeadCB, LeadStatusCB
from tests.conftest import Harness, Team
from tests.fakes import RecordingSession, make_bot, tg_user

ROUND_TRIP = 0.05
GATE_TIMEOUT = 10.0


class SlowSession(RecordingSession):
    """Answers every Bot API call after ``ROUND_TRIP`` seconds; calls overlap, as Telegram's do.

    On each call it also checks that no transaction holds SQLite's write lock (``BEGIN IMMEDIATE`` from
    a connection of its own, without waiting) and counts how many calls are in flight at once.
    """

    def __init__(self, db_path: Path | None = None) -> None:
        super().__init__()
        self.db_path = db_path
        self.locked_during: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        # When set: a call waits (up to GATE_TIMEOUT) until this many are in flight, so "all at once" is
        # shown by the calls meeting, not by a round trip outlasting the others' work on a busy machine.
        self.gather: int | None = None
        self._met = asyncio.Event()

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        if self.db_path is not None and _write_lock_taken(self.db_path):
            self.locked_during.append(type(method).__name__)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gather is not None:
                if self.in_flight >= self.gather:
                    self._met.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._met.wait(), GATE_TIMEOUT)
            await asyncio.sleep(ROUND_TRIP)
            return await super().make_request(bot, method, timeout)
        finally:
            self.in_flight -= 1


def _write_lock_taken(path: Path) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    finally:
        probe.close()


def _db_path(settings: Settings) -> Path:
    return Path(settings.database.url.removeprefix("sqlite+aiosqlite:///"))


@pytest.fixture
def slow(settings: Settings, database: Database) -> Harness:
    # The write-lock probe is SQLite's; on PostgreSQL the session only counts what is in flight.
    session = SlowSession(_db_path(settings) if database.dialect == "sqlite" else None)
    dp = create_dispatcher(settings, database)
    return Harness(bot=make_bot(session), session=session, dp=dp, settings=settings, uow_factory=dp["uow_factory"])


async def new_lead(harness: Harness, team: Team, phone: str, *, assigned: bool = True) -> int:
    async with harness.uow_factory() as uow:
        lead = await uow.leads.create(
            team.mop.user,
            LeadDraft("Иван Петров", phone, "Instagram", 50000, None, team.seller.id if assigned else None),
        )
        await uow.commit()
        return lead.id


@pytest.mark.sqlite_only
async def test_no_write_lock_is_held_while_the_bot_talks_to_telegram(slow: Harness, team: Team) -> None:
    lead_id = await new_lead(slow, team, "+998901234567")
    free_id = await new_lead(slow, team, "+998901234568", assigned=False)
    # Reads, and every kind of change a button or a typed answer makes, each answered over the network.
    await slow.send(team.seller, f"/lead {lead_id}")
    await slow.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))
    await slow.click(team.seller, LeadCB(action=LeadAction.COMMENT, lead_id=lead_id))
    await slow.send(team.seller, "Перезвонить завтра")
    await slow.click(team.seller, LeadCB(action=LeadAction.TAKE, lead_id=free_id))
    await slow.send(team.rop, f"/assign {free_id} {team.seller2.id}")
    await slow.send(team.rop, "/leads")
    await slow.send(team.mop, "/new")
    session = slow.session
    assert isinstance(session, SlowSession)
    async with slow.uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None and lead.status == LeadStatus.IN_WORK
    assert len(session.requests) >= 10
    assert session.locked_during == []


@pytest.mark.sqlite_only
async def test_the_probe_sees_a_held_write_lock(settings: Settings) -> None:
    """The check above can fail: a transaction that took the write lock is seen."""
    holder = sqlite3.connect(_db_path(settings), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert _write_lock_taken(_db_path(settings))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not _write_lock_taken(_db_path(settings))


async def test_different_people_are_answered_at_once(slow: Harness, team: Team) -> None:
    lead_id = await new_lead(slow, team, "+998901234567")
    people = [team.admin, team.rop, team.mop, team.seller, team.finance]
    updates = [slow.updates.message(member.tg, f"/lead {lead_id}") for member in people]
    session = slow.session
    assert isinstance(session, SlowSession)
    session.gather = len(people)
    await asyncio.gather(*(slow.dp.feed_update(slow.bot, update) for update in updates))
    # Every one of them waited on Telegram at the same moment, none behind another's round trip.
    assert session.most_in_flight == len(people)
    assert all(f"#{lead_id}" in slow.last_text(member.chat_id) for member in people)


def _quick_tap_then_type(harness: Harness, team: Team) -> list[Any]:
    """The /new summary steps up to the source, then a tap on the source and the budget typed at once."""
    return [
        harness.updates.callback(team.mop.tg, _button(harness, team.mop.chat_id, "Instagram")),
        harness.updates.message(team.mop.tg, "50k"),
    ]


def _button(harness: Harness, chat_id: int, caption: str) -> str:
    for text, data in harness.last_buttons(chat_id):
        if caption in text:
            return data
    raise AssertionError(f"no button {caption!r}")


async def _run_tap_then_type(harness: Harness, team: Team) -> None:
    await harness.send(team.mop, "/new")
    await harness.send(team.mop, "Иван Петров")
    await harness.send(team.mop, "+998 90 123-45-67")
    tap, typed = _quick_tap_then_type(harness, team)
    # As polling hands them over: each update its own task, started in the order they arrived.
    first = asyncio.create_task(harness.dp.feed_update(harness.bot, tap))
    second = asyncio.create_task(harness.dp.feed_update(harness.bot, typed))
    await asyncio.gather(first, second)


async def test_a_tap_followed_at_once_by_typing_is_handled_in_order(slow: Harness, team: Team) -> None:
    await _run_tap_then_type(slow, team)
    # The budget was taken as the answer to the budget question: the next step (notes) is asked.
    replies = [r.text for r in slow.session.of(SendMessage) if int(r.chat_id) == team.mop.chat_id]
    assert not any("источник" in text.lower() and "неизвест" in text.lower() for text in replies), replies
    data = await slow.dp.storage.get_data(_key(slow, team))
    assert data["draft"]["budget"] == 50000


async def test_without_the_per_person_lock_the_same_taps_race(
    settings: Settings, database: Database, team: Team
) -> None:
    """The test above can fail: with no isolation the typed budget overtakes the tap."""
    session = SlowSession()
    dp = create_dispatcher(settings, database, events_isolation=DisabledEventIsolation())
    racing = Harness(bot=make_bot(session), session=session, dp=dp, settings=settings, uow_factory=dp["uow_factory"])
    await _run_tap_then_type(racing, team)
    data = await racing.dp.storage.get_data(_key(racing, team))
    assert data["draft"].get("budget") != 50000


def _key(harness: Harness, team: Team) -> Any:
    from aiogram.fsm.storage.base import StorageKey

    return StorageKey(bot_id=harness.bot.id, chat_id=team.mop.chat_id, user_id=team.mop.chat_id)


async def test_a_read_unit_cannot_write_and_does_not_wait_for_a_writer(
    database: Database, uow_factory: Any, team: Team
) -> None:
    async with uow_factory() as writer:
        # The writer holds SQLite's write lock (its transaction began with BEGIN IMMEDIATE) ...
        await writer.leads.create(team.mop.user, LeadDraft("Пётр", "+998901234569", "Instagram"))
        async with uow_factory(read_only=True) as reader:
            # ... and a reader goes on beside it, seeing the last committed state.
            assert (await reader.session.scalars(select(Lead.id))).all() == []
            reader.session.add(Lead(client_name="x", phone_number="+998901234560", source="Сайт", status="новый"))
            # SQLite: "attempt to write a readonly database"; PostgreSQL: "... in a read-only transaction".
            with pytest.raises(DBAPIError, match=r"readonly|read-only"):
                await reader.session.flush()
        await writer.commit()


async def test_sql_statements_are_logged(uow_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    """SQLAlchemy's own statement logging works on the default engine (the suite runs with it on)."""
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
        async with uow_factory(read_only=True) as uow:
            await uow.session.execute(select(Lead.id).where(Lead.id == 424242))
    assert any("SELECT leads.id" in record.getMessage() for record in caplog.records)


async def test_the_bot_in_a_group_chat_and_a_stranger_change_nothing_while_others_work(
    slow: Harness, team: Team
) -> None:
    """A stranger's update is refused with one line while a salesperson's goes through, side by side."""
    lead_id = await new_lead(slow, team, "+998901234567")
    stranger = tg_user(777, "Кто-то")
    await asyncio.gather(
        slow.dp.feed_update(slow.bot, slow.updates.message(stranger, "/leads")),
        slow.dp.feed_update(
            slow.bot,
            slow.updates.callback(team.seller.tg, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK).pack()),
        ),
    )
    async with slow.uow_factory() as uow:
        assert (await uow.session.get(Lead, lead_id)).status == LeadStatus.IN_WORK  # type: ignore[union-attr]
    assert "777" in slow.last_text(777)
