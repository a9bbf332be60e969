"""The team chat: new leads posted there, "Take" gives one owner, and the post shows who took it."""

from __future__ import annotations

import asyncio

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from sqlalchemy import func, select

from bot.config import Settings
from bot.delivery import DeliveryWorker, VirtualClock
from bot.factory import create_dispatcher
from db.engine import Database
from db.enums import HistoryAction
from db.models import Lead, LeadHistory, OutboxMessage
from db.repositories import LeadDraft
from keyboards.callbacks import LeadAction, LeadCB
from tests.conftest import Harness, Member, Team
from tests.fakes import RecordingSession, buttons, make_bot

TEAM_CHAT = -1009876
TEAM_THREAD = 12


@pytest.fixture
def chat(settings: Settings, database: Database) -> Harness:
    notifications = settings.notifications.model_copy(update={"team_chat_id": TEAM_CHAT, "team_thread_id": TEAM_THREAD})
    team_settings = settings.model_copy(update={"notifications": notifications})
    session = RecordingSession()
    dp = create_dispatcher(team_settings, database)
    return Harness(bot=make_bot(session), session=session, dp=dp, settings=team_settings, uow_factory=dp["uow_factory"])


async def deliver(harness: Harness) -> None:
    worker = DeliveryWorker(harness.bot, harness.uow_factory, harness.settings.notifications, clock=VirtualClock())
    await worker.run(until_idle=True)


async def unassigned_lead(harness: Harness, author: Member) -> int:
    async with harness.uow_factory() as uow:
        lead = await uow.leads.create(
            author.user, LeadDraft(client_name="Анна <VIP>", phone_number="+998907654321", source="Сайт", budget=90000)
        )
        await uow.commit()
        return lead.id


async def press_take(harness: Harness, who: Member, lead_id: int, post_id: int) -> None:
    update = harness.updates.callback(
        who.tg, LeadCB(action=LeadAction.TAKE, lead_id=lead_id), chat_id=TEAM_CHAT, message_id=post_id
    )
    await harness.dp.feed_update(harness.bot, update)


async def owner(harness: Harness, lead_id: int) -> int | None:
    async with harness.uow_factory() as uow:
        return await uow.session.scalar(select(Lead.assigned_to_id).where(Lead.id == lead_id))


def answers(harness: Harness) -> list[str]:
    return [a.text or "" for a in harness.session.of(AnswerCallbackQuery)]


async def posted(harness: Harness, lead_id: int) -> SendMessage:
    await deliver(harness)
    [post] = harness.session.messages(TEAM_CHAT)
    assert post.message_thread_id == TEAM_THREAD
    return post


async def post_id_of(harness: Harness, lead_id: int) -> int:
    async with harness.uow_factory() as uow:
        row = await uow.outbox.by_key(f"team:new:{lead_id}")
        assert row is not None and row.telegram_message_id is not None
        return row.telegram_message_id


async def test_unassigned_lead_is_posted_with_a_take_button(chat: Harness, team: Team) -> None:
    lead_id = await unassigned_lead(chat, team.mop)
    post = await posted(chat, lead_id)
    assert f"Новый лид #{lead_id}" in post.text
    assert "Анна &lt;VIP&gt;" in post.text
    assert "Бюджет: $90,000" in post.text
    assert buttons(post.reply_markup) == [("🙋 Беру!", LeadCB(action=LeadAction.TAKE, lead_id=lead_id).pack())]


async def test_first_salesperson_takes_it_and_the_post_shows_who(chat: Harness, team: Team) -> None:
    lead_id = await unassigned_lead(chat, team.mop)
    await posted(chat, lead_id)
    post_id = await post_id_of(chat, lead_id)

    await press_take(chat, team.seller, lead_id, post_id)

    assert answers(chat)[-1] == f"Лид #{lead_id} теперь ваш."
    assert await owner(chat, lead_id) == team.seller.id
    await deliver(chat)
    [edit] = chat.session.of(EditMessageText)
    assert (edit.chat_id, edit.message_id) == (TEAM_CHAT, post_id)
    assert "✅ Взял: Продажник Иванов" in edit.text
    assert "Анна &lt;VIP&gt;" in edit.text
    assert edit.reply_markup is None  # no "Take" any more
    # The taker is the author: no private notification about their own take.
    assert chat.session.messages(team.seller.chat_id) == []

    # A second press, by someone else: refused, nothing changes, the post is not touched again.
    await press_take(chat, team.seller2, lead_id, post_id)
    assert answers(chat)[-1] == "Лид уже забрали."
    assert await owner(chat, lead_id) == team.seller.id
    await deliver(chat)
    assert len(chat.session.of(EditMessageText)) == 1

    # The owner pressing again is told it is theirs already.
    await press_take(chat, team.seller, lead_id, post_id)
    assert answers(chat)[-1] == "Этот лид уже ваш."


@pytest.mark.parametrize("role", ["mop", "rop", "admin", "finance"])
async def test_only_salespeople_take(chat: Harness, team: Team, role: str) -> None:
    lead_id = await unassigned_lead(chat, team.rop)
    await press_take(chat, getattr(team, role), lead_id, 1)
    assert answers(chat)[-1] == "Брать лиды из общего чата могут только продажники."
    assert await owner(chat, lead_id) is None


async def test_two_presses_at_once_give_one_owner(chat: Harness, team: Team) -> None:
    lead_id = await unassigned_lead(chat, team.mop)
    await posted(chat, lead_id)
    post_id = await post_id_of(chat, lead_id)

    await asyncio.gather(
        press_take(chat, team.seller, lead_id, post_id), press_take(chat, team.seller2, lead_id, post_id)
    )

    winner = await owner(chat, lead_id)
    assert winner in (team.seller.id, team.seller2.id)
    assert sorted(answers(chat)) == sorted([f"Лид #{lead_id} теперь ваш.", "Лид уже забрали."])
    async with chat.uow_factory() as uow:
        assigned = await uow.session.scalar(
            select(func.count())
            .select_from(LeadHistory)
            .where(LeadHistory.lead_id == lead_id, LeadHistory.action == HistoryAction.ASSIGNED.value)
        )
        edits = await uow.session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.kind == "team_taken")
        )
    assert (assigned, edits) == (1, 1)
    await deliver(chat)
    [edit] = chat.session.of(EditMessageText)
    winner_name = "Продажник Иванов" if winner == team.seller.id else "Второй Продажник"
    assert f"✅ Взял: {winner_name}" in edit.text


async def test_a_manager_assigning_the_posted_lead_updates_the_post(chat: Harness, team: Team) -> None:
    lead_id = await unassigned_lead(chat, team.mop)
    await posted(chat, lead_id)
    post_id = await post_id_of(chat, lead_id)
    async with chat.uow_factory() as uow:
        await uow.leads.assign(team.rop.user, lead_id, team.seller2.id)
        await uow.commit()

    await deliver(chat)

    [edit] = chat.session.of(EditMessageText)
    assert (edit.message_id, edit.reply_markup) == (post_id, None)
    assert "✅ Назначен: Второй Продажник" in edit.text
    assert len(chat.session.messages(team.seller2.chat_id)) == 1  # and the salesperson hears it privately


async def test_a_lead_assigned_before_its_post_went_out_is_posted_up_to_date(chat: Harness, team: Team) -> None:
    lead_id = await unassigned_lead(chat, team.mop)
    async with chat.uow_factory() as uow:
        await uow.leads.assign(team.rop.user, lead_id, team.seller.id)
        await uow.commit()

    post = await posted(chat, lead_id)

    assert "✅ Назначен: Продажник Иванов" in post.text
    assert buttons(post.reply_markup) == []
    assert chat.session.of(EditMessageText) == []
