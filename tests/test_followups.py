"""Follow-ups: the conversation that sets one, its due reminder and overdue escalation, /tasks, Done and
Snooze, and who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from aiogram.methods import EditMessageText
from sqlalchemy import select

from bot.config import Settings
from db.engine import open_database
from db.enums import HistoryAction
from db.errors import InvalidInput
from db.models import FollowUp, LeadHistory, User, utcnow
from db.reminders import Kind, ReminderJobs, local_at, parse_due, preset_due, presets_ahead
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import (
    DuePreset,
    FollowUpAction,
    FollowUpCB,
    LeadAction,
    LeadCB,
    MenuAction,
    MenuCB,
    SnoozeCB,
    SnoozeTarget,
    SnoozeUntil,
)
from tests.conftest import Harness, Member, Team
from tests.rendering import text_of
from tests.test_reminders import TZ, button_data, chats, local, make_lead, outbox, reminder_settings


async def followups(uow_factory: UnitOfWorkFactory) -> list[FollowUp]:
    async with uow_factory() as uow:
        return list((await uow.session.scalars(select(FollowUp).order_by(FollowUp.id))).all())


async def set_followup(
    uow_factory: UnitOfWorkFactory,
    author: User,
    lead_id: int,
    due_at: datetime,
    text: str = "Перезвонить",
    *,
    now: datetime | None = None,
) -> int:
    async with uow_factory() as uow:
        actor = await uow.users.by_id(author.id)
        assert actor is not None
        item = await uow.followups.create(actor, lead_id, due_at, text, now=now or due_at - timedelta(days=1))
        await uow.commit()
        return item.followup.id


async def start(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.click(who, LeadCB(action=LeadAction.FOLLOWUP, lead_id=lead_id))


# ---- the conversation ----------------------------------------------------------------------------------


async def test_set_a_followup_with_the_tomorrow_button(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)

    await start(harness, team.seller, lead_id)
    assert "Когда напомнить?" in harness.last_text(team.seller.chat_id)
    before = utcnow()
    await harness.press(team.seller, "Завтра в 10:00")
    after = utcnow()
    assert "что сделать" in harness.last_text(team.seller.chat_id)
    await harness.send(team.seller, "Позвонить <клиенту> & отправить планировки")

    done = harness.last_text(team.seller.chat_id)
    assert "✅ Задача по лиду" in done
    assert "Позвонить &lt;клиенту&gt; &amp; отправить планировки" in done
    [followup] = await followups(harness.uow_factory)
    assert followup.lead_id == lead_id
    assert followup.created_by_id == team.seller.id
    assert followup.text == "Позвонить <клиенту> & отправить планировки"
    assert followup.due_at in {local_at(before, TZ, time(10), days=1), local_at(after, TZ, time(10), days=1)}
    async with harness.uow_factory() as uow:
        history = (
            await uow.session.scalars(select(LeadHistory).where(LeadHistory.action == HistoryAction.FOLLOWUP_SET))
        ).all()
    assert [(h.lead_id, h.changed_by_id, h.new_value) for h in history] == [(lead_id, team.seller.id, followup.text)]

    # The conversation is over: the next text is not taken for another follow-up.
    await harness.send(team.seller, "ещё одна")
    assert len(await followups(harness.uow_factory)) == 1


async def test_set_a_followup_in_an_hour(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user)  # unassigned: a manager sets it
    await start(harness, team.mop, lead_id)
    before = utcnow()
    await harness.press(team.mop, "Через час")
    after = utcnow()
    await harness.send(team.mop, "Найти продажника")
    [followup] = await followups(harness.uow_factory)
    assert before + timedelta(minutes=59) <= followup.due_at <= after + timedelta(hours=1)
    assert followup.due_at.second == 0


async def test_typed_due_time_bad_input_and_text_checks(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    await start(harness, team.seller, lead_id)
    chat = team.seller.chat_id

    await harness.send(team.seller, "завтра после обеда")
    assert "Не понял дату и время" in harness.last_text(chat)
    assert "<code>" in harness.last_text(chat)  # with an example
    await harness.send(team.seller, "31.02.2099 10:00")
    assert "Не понял дату и время" in harness.last_text(chat)
    await harness.send(team.seller, "01.01.2020 10:00")
    assert "уже прошло" in harness.last_text(chat)
    await harness.send(team.seller)  # not text at all (a sticker, a photo)
    assert "Выберите срок кнопкой" in harness.last_text(chat)

    await harness.send(team.seller, "2099-12-25 14:30")
    assert "25.12.2099 14:30" in harness.last_text(chat)
    await harness.send(team.seller)
    assert "Напишите текстом" in harness.last_text(chat)
    await harness.send(team.seller, "x" * 501)
    assert "длиннее 500" in harness.last_text(chat)
    assert await followups(harness.uow_factory) == []

    await harness.send(team.seller, "Подписать договор")
    [followup] = await followups(harness.uow_factory)
    assert followup.due_at == datetime(2099, 12, 25, 14, 30, tzinfo=TZ).astimezone(UTC)
    assert followup.text == "Подписать договор"


async def test_cancel_leaves_nothing(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    await start(harness, team.seller, lead_id)
    await harness.send(team.seller, "25.12.2099 14:30")
    await harness.send(team.seller, "/cancel")
    assert harness.last_text(team.seller.chat_id) == "Отменено."
    await harness.send(team.seller, "Позвонить")
    assert await followups(harness.uow_factory) == []


@pytest.mark.parametrize("who", ["seller2", "finance"])
async def test_a_forged_followup_button_on_someone_elses_lead_is_refused(
    harness: Harness, team: Team, who: str
) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    member: Member = getattr(team, who)
    await start(harness, member, lead_id)
    assert harness.alerts() == ["Изменять этот лид вы не можете."]
    # No conversation began: a date typed now is not taken.
    await harness.send(member, "25.12.2099 14:30")
    await harness.send(member, "Позвонить")
    assert await followups(harness.uow_factory) == []


async def test_a_lead_that_changed_hands_mid_conversation_is_refused_at_the_end(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    await start(harness, team.seller, lead_id)
    await harness.send(team.seller, "25.12.2099 14:30")
    async with harness.uow_factory() as uow:
        rop = await uow.users.by_id(team.rop.id)
        assert rop is not None
        await uow.leads.assign(rop, lead_id, team.seller2.id)
        await uow.commit()
    await harness.send(team.seller, "Позвонить")
    assert harness.last_text(team.seller.chat_id) == "Изменять этот лид вы не можете."
    assert await followups(harness.uow_factory) == []


def test_due_time_helpers() -> None:
    morning = local(2025, 12, 1, 17, 59)
    assert presets_ahead(morning, TZ) == [DuePreset.IN_HOUR, DuePreset.TODAY_18, DuePreset.TOMORROW_10]
    assert presets_ahead(local(2025, 12, 1, 18, 0), TZ) == [DuePreset.IN_HOUR, DuePreset.TOMORROW_10]
    assert preset_due(DuePreset.TODAY_18, morning, TZ) == local(2025, 12, 1, 18)
    assert preset_due(DuePreset.TOMORROW_10, local(2025, 12, 31, 23, 30), TZ) == local(2026, 1, 1, 10)
    assert preset_due(DuePreset.IN_HOUR, local(2025, 12, 1, 10, 15, 42), TZ) == local(2025, 12, 1, 11, 15)

    now = local(2025, 12, 1, 12)
    assert parse_due("25.12.2025 14:30", now, TZ) == local(2025, 12, 25, 14, 30)
    assert parse_due("  2025-12-25   14:30 ", now, TZ) == local(2025, 12, 25, 14, 30)
    assert parse_due("5.1.2026 9:05", now, TZ) == local(2026, 1, 5, 9, 5)
    for bad in ("", "завтра", "25.12.2025", "14:30", "2025-13-01 10:00", "25.12.2025 25:00"):
        with pytest.raises(InvalidInput) as invalid:
            parse_due(bad, now, TZ)
        assert invalid.value.reason == "due_invalid"
        assert invalid.value.params["example"] == "02.12.2025 14:30"
    with pytest.raises(InvalidInput) as past:
        parse_due("01.12.2025 12:00", now, TZ)
    assert past.value.reason == "due_past"


# ---- the due reminder and the overdue escalation ------------------------------------------------------


@pytest.fixture
def jobs(settings: Settings, uow_factory: UnitOfWorkFactory) -> ReminderJobs:
    return ReminderJobs(uow_factory, reminder_settings(settings, overdue_escalate_after="24h"))


async def test_the_assignee_is_reminded_once_at_the_due_time(
    jobs: ReminderJobs, settings: Settings, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user, name="<Петров>")
    due = local(2025, 12, 1, 15)
    followup_id = await set_followup(uow_factory, team.mop.user, lead_id, due, "Отправить <КП>")

    assert await jobs.remind_followups(due - timedelta(seconds=1)) == 0
    assert await jobs.remind_followups(due) == 1
    assert await jobs.remind_followups(due + timedelta(hours=1)) == 0
    restarted_db = open_database(settings.database.url)  # a restart
    try:
        restarted = ReminderJobs(UnitOfWorkFactory(restarted_db, settings), jobs.settings)
        assert await restarted.remind_followups(due + timedelta(hours=1)) == 0
    finally:
        await restarted_db.dispose()

    [row] = await outbox(uow_factory, Kind.FOLLOWUP_DUE)
    assert row.chat_id == team.seller.chat_id  # the lead's salesperson, not the manager who set it
    assert row.idempotency_key.startswith(f"followup:{followup_id}:due")
    assert "Отправить &lt;КП&gt;" in (await text_of(uow_factory, row))
    assert "&lt;Петров&gt;" in (await text_of(uow_factory, row))
    assert FollowUpCB(action=FollowUpAction.DONE, followup_id=followup_id).pack() in await button_data(uow_factory, row)
    assert SnoozeCB(
        target=SnoozeTarget.FOLLOWUP, target_id=followup_id, until=SnoozeUntil.TOMORROW
    ).pack() in await button_data(uow_factory, row)


async def test_on_an_unassigned_lead_its_creator_is_reminded(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user)
    due = local(2025, 12, 1, 15)
    await set_followup(uow_factory, team.mop.user, lead_id, due)
    await jobs.remind_followups(due)
    assert chats(await outbox(uow_factory, Kind.FOLLOWUP_DUE)) == [team.mop.chat_id]


async def test_done_followups_are_not_reminded_nor_escalated(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user)
    due = local(2025, 12, 1, 15)
    followup_id = await set_followup(uow_factory, team.seller.user, lead_id, due)
    async with uow_factory() as uow:
        seller = await uow.users.by_id(team.seller.id)
        assert seller is not None
        await uow.followups.complete(seller, followup_id)
        await uow.commit()
    assert await jobs.tick(due + timedelta(days=2)) == 0


async def test_an_overdue_followup_is_reported_to_the_rops_once(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user)
    due = local(2025, 12, 1, 10)
    followup_id = await set_followup(uow_factory, team.seller.user, lead_id, due, "Встреча")

    await jobs.tick(due)  # the due reminder
    assert await jobs.tick(due + timedelta(hours=24) - timedelta(seconds=1)) == 0
    assert await jobs.tick(due + timedelta(hours=24)) == 1
    assert await jobs.tick(due + timedelta(hours=30)) == 0

    [row] = await outbox(uow_factory, Kind.FOLLOWUP_OVERDUE)
    assert row.chat_id == team.rop.chat_id
    assert row.idempotency_key == f"followup:{followup_id}:overdue:{team.rop.id}"
    assert "Продажник Иванов" in (await text_of(uow_factory, row))
    assert "Встреча" in (await text_of(uow_factory, row))
    assert len(await outbox(uow_factory, Kind.FOLLOWUP_DUE)) == 1


async def test_an_overdue_escalation_waits_for_working_hours(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user)
    due = local(2025, 12, 1, 20, 30)  # overdue by a day at 20:30 the next evening: after hours
    await set_followup(uow_factory, team.seller.user, lead_id, due)
    await jobs.tick(due)
    assert await jobs.escalate_overdue_followups(local(2025, 12, 2, 20, 30)) == 0
    assert await jobs.escalate_overdue_followups(local(2025, 12, 3, 8, 59)) == 0
    assert await jobs.escalate_overdue_followups(local(2025, 12, 3, 9, 0)) == 1


async def test_snoozing_a_due_followup_reminds_again_at_the_new_time(
    settings: Settings, harness: Harness, team: Team
) -> None:
    jobs = ReminderJobs(harness.uow_factory, settings)
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    due = utcnow() - timedelta(minutes=5)
    followup_id = await set_followup(harness.uow_factory, team.seller.user, lead_id, due)
    assert await jobs.remind_followups(due) == 1

    before = utcnow()
    await harness.click(
        team.seller, SnoozeCB(target=SnoozeTarget.FOLLOWUP, target_id=followup_id, until=SnoozeUntil.HOUR)
    )
    [followup] = await followups(harness.uow_factory)
    assert before + timedelta(hours=1) <= followup.due_at <= utcnow() + timedelta(hours=1)
    assert followup.reminded_at is None
    assert any(answer.startswith("Перенесено на") for answer in harness.alerts())

    assert await jobs.remind_followups(followup.due_at - timedelta(seconds=1)) == 0
    assert await jobs.remind_followups(followup.due_at) == 1
    rows = await outbox(harness.uow_factory, Kind.FOLLOWUP_DUE)
    assert chats(rows) == [team.seller.chat_id] * 2
    assert len({r.idempotency_key for r in rows}) == 2


# ---- /tasks, Done and Snooze -------------------------------------------------------------------------


async def test_tasks_lists_ones_open_followups_soonest_first_with_done_and_snooze(harness: Harness, team: Team) -> None:
    factory = harness.uow_factory
    now = utcnow()
    mine = await make_lead(factory, team.rop.user, assigned_to=team.seller.user, name="Мой клиент")
    other = await make_lead(factory, team.rop.user, assigned_to=team.seller2.user, name="Чужой клиент")
    later = await set_followup(factory, team.seller.user, mine, now + timedelta(hours=3), "Третья")
    overdue = await set_followup(
        factory, team.seller.user, mine, now - timedelta(hours=1), "Первая", now=now - timedelta(hours=2)
    )
    soon = await set_followup(factory, team.mop.user, mine, now + timedelta(hours=1), "Вторая")
    await set_followup(factory, team.seller2.user, other, now + timedelta(minutes=30), "Не моя")
    finished = await set_followup(factory, team.seller.user, mine, now + timedelta(minutes=10), "Сделана")
    async with factory() as uow:
        seller = await uow.users.by_id(team.seller.id)
        assert seller is not None
        await uow.followups.complete(seller, finished)
        await uow.commit()

    await harness.send(team.seller, "/tasks")
    text = harness.last_text(team.seller.chat_id)
    lines = [line for line in text.splitlines() if line[:1].isdigit()]
    assert [line.split(": ")[-1] for line in lines] == ["Первая", "Вторая", "Третья"]
    assert lines[0].startswith("1. ⚠️")  # overdue marked
    assert "(3)" in text
    assert "Не моя" not in text and "Сделана" not in text
    data = [d for _, d in harness.last_buttons(team.seller.chat_id)]
    assert data[0] == FollowUpCB(action=FollowUpAction.DONE, followup_id=overdue, in_list=True).pack()
    assert len(data) == 9

    await harness.press(team.seller, "✅ 1")
    assert "Задача выполнена." in harness.alerts()
    edited = harness.last(team.seller.chat_id)
    assert isinstance(edited, EditMessageText)
    assert "Первая" not in edited.text and "(2)" in edited.text
    async with factory() as uow:
        done = await uow.session.get(FollowUp, overdue)
        assert done is not None and done.done_at is not None
        history = (
            await uow.session.scalars(select(LeadHistory).where(LeadHistory.action == HistoryAction.FOLLOWUP_DONE))
        ).all()
    assert [(h.new_value, h.changed_by_id) for h in history] == [
        ("Сделана", team.seller.id),
        ("Первая", team.seller.id),
    ]

    # Snooze "Вторая" (now first) to tomorrow 10:00: it moves behind "Третья".
    await harness.press(team.seller, "🌅 1")
    edited = harness.last(team.seller.chat_id)
    assert edited.text.index("Третья") < edited.text.index("Вторая")
    async with factory() as uow:
        moved = await uow.session.get(FollowUp, soon)
        assert moved is not None
        assert moved.due_at > now + timedelta(hours=3)
        assert moved.due_at.astimezone(TZ).time() == time(10, 0)
        untouched = await uow.session.get(FollowUp, later)
        assert untouched is not None and untouched.due_at == now + timedelta(hours=3)

    # A second press on an old "Done" button changes nothing.
    await harness.click(team.seller, FollowUpCB(action=FollowUpAction.DONE, followup_id=overdue, in_list=False))
    assert harness.alerts()[-1] == "Задача уже была выполнена."


async def test_managers_see_the_followups_they_set(harness: Harness, team: Team) -> None:
    factory = harness.uow_factory
    now = utcnow()
    unassigned = await make_lead(factory, team.rop.user, name="Без продажника")
    sellers = await make_lead(factory, team.rop.user, assigned_to=team.seller.user, name="У продажника")
    await set_followup(factory, team.mop.user, unassigned, now + timedelta(hours=1), "Назначить")
    await set_followup(factory, team.mop.user, sellers, now + timedelta(hours=2), "Проверить звонок")

    await harness.send(team.mop, "/tasks")
    mop_text = harness.last_text(team.mop.chat_id)
    assert "Назначить" in mop_text and "Проверить звонок" in mop_text
    await harness.click(team.seller, MenuCB(action=MenuAction.TASKS))
    seller_text = harness.last_text(team.seller.chat_id)
    assert "Проверить звонок" in seller_text and "Назначить" not in seller_text
    await harness.send(team.finance, "/tasks")
    assert harness.last_text(team.finance.chat_id) == "Открытых задач нет. 🎉"


async def test_someone_else_cannot_complete_or_snooze_a_followup(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    followup_id = await set_followup(harness.uow_factory, team.seller.user, lead_id, utcnow() + timedelta(hours=1))
    await harness.click(team.seller2, FollowUpCB(action=FollowUpAction.DONE, followup_id=followup_id))
    await harness.click(
        team.seller2, SnoozeCB(target=SnoozeTarget.FOLLOWUP, target_id=followup_id, until=SnoozeUntil.TOMORROW)
    )
    await harness.click(team.seller, FollowUpCB(action=FollowUpAction.DONE, followup_id=followup_id + 100))
    assert harness.alerts() == [
        "Изменять этот лид вы не можете.",
        "Изменять этот лид вы не можете.",
        "Задача не найдена (или её лид удалён).",
    ]
    [followup] = await followups(harness.uow_factory)
    assert followup.done_at is None
    assert followup.due_at < utcnow() + timedelta(hours=2)


async def test_the_card_offers_a_followup_to_those_who_may_update_the_lead(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    button = LeadCB(action=LeadAction.FOLLOWUP, lead_id=lead_id).pack()
    await harness.send(team.seller, f"/lead {lead_id}")
    assert button in [d for _, d in harness.last_buttons(team.seller.chat_id)]
    await harness.send(team.finance, f"/lead {lead_id}")
    assert button not in [d for _, d in harness.last_buttons(team.finance.chat_id)]


# ---- on the card -----------------------------------------------------------------------------------------


async def test_open_followups_show_on_the_card_escaped_and_leave_it_when_done(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    soon = utcnow() + timedelta(hours=2)
    later_id = await set_followup(harness.uow_factory, team.seller.user, lead_id, soon + timedelta(days=1), "Потом")
    await set_followup(harness.uow_factory, team.seller.user, lead_id, soon, "Отправить <b>планировки</b>")
    past_id = await set_followup(
        harness.uow_factory,
        team.seller.user,
        lead_id,
        utcnow() - timedelta(hours=1),
        "Просроченная",
        now=utcnow() - timedelta(hours=2),
    )

    await harness.send(team.seller, f"/lead {lead_id}")
    card = harness.last_text(team.seller.chat_id)
    assert "Задачи</b> (открытых: 3)" in card
    assert "Отправить &lt;b&gt;планировки&lt;/b&gt;" in card
    # Soonest first: the overdue one, then the one in two hours, then tomorrow's.
    assert card.index("Просроченная") < card.index("планировки") < card.index("Потом")
    assert "⚠️" in card.split("Просроченная")[0].rsplit("\n", 1)[1]  # overdue is marked

    async with harness.uow_factory() as uow:
        actor = await uow.users.by_id(team.seller.id)
        assert actor is not None
        await uow.followups.complete(actor, past_id)
        await uow.followups.complete(actor, later_id)
        await uow.commit()
    await harness.send(team.finance, f"/lead {lead_id}")
    section = harness.last_text(team.finance.chat_id).split("Задачи</b>")[1].split("\n\n")[0]
    assert "(открытых: 1)" in section and "планировки" in section
    assert "Просроченная" not in section and "Потом" not in section
