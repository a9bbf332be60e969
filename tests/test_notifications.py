"""Events → outbox rows: exactly the right chats, in their language, escaped, never for a rolled-back change."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from bot.config import Settings
from bot.factory import create_dispatcher
from db.engine import Database
from db.enums import HistoryAction, LeadStatus, Role, StatusCode
from db.errors import DuplicateLead
from db.events import LeadCreated, LeadStatusChanged
from db.models import OutboxMessage
from db.notifications import (
    KIND_ASSIGNED,
    KIND_COMMENT,
    KIND_NEW_LEAD,
    KIND_STATUS,
    KIND_TEAM_NEW,
    KIND_TEAM_STATUS,
    KIND_UNASSIGNED,
    NotificationRules,
)
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import AssignCB, LeadAction, LeadCB, LeadStatusCB
from tests.conftest import Harness, Member, Team, add_member
from tests.fakes import RecordingSession, make_bot
from tests.rendering import buttons_of, text_of

TEAM_CHAT = -1001234
TEAM_THREAD = 77


async def outbox_rows(factory: UnitOfWorkFactory) -> list[OutboxMessage]:
    async with factory() as uow:
        return list((await uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


def chats(rows: list[OutboxMessage], kind: str | None = None) -> list[int]:
    return sorted(row.chat_id for row in rows if kind is None or row.kind == kind)


async def new_lead(
    factory: UnitOfWorkFactory,
    author: Member,
    *,
    assignee: Member | None = None,
    name: str = "Иван Петров",
    phone: str = "+998901234567",
    budget: float | None = 50000,
) -> int:
    async with factory() as uow:
        lead = await uow.leads.create(
            author.user,
            LeadDraft(
                client_name=name,
                phone_number=phone,
                source="Instagram",
                budget=budget,
                assigned_to=assignee.id if assignee else None,
            ),
        )
        await uow.commit()
        return lead.id


async def clear_outbox(factory: UnitOfWorkFactory) -> None:
    async with factory() as uow:
        await uow.session.execute(delete(OutboxMessage))
        await uow.commit()


def with_team_chat(settings: Settings) -> Settings:
    notifications = settings.notifications.model_copy(update={"team_chat_id": TEAM_CHAT, "team_thread_id": TEAM_THREAD})
    return settings.model_copy(update={"notifications": notifications})


@pytest.fixture
def team_harness(settings: Settings, database: Database) -> Harness:
    team_settings = with_team_chat(settings)
    session = RecordingSession()
    dp = create_dispatcher(team_settings, database)
    return Harness(bot=make_bot(session), session=session, dp=dp, settings=team_settings, uow_factory=dp["uow_factory"])


# ---- new lead ----------------------------------------------------------------------------------------------


async def test_new_lead_reaches_only_its_salesperson_with_the_reference_message(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.mop, assignee=team.seller)

    rows = await outbox_rows(harness.uow_factory)
    assert [(row.chat_id, row.kind, row.user_id) for row in rows] == [
        (team.seller.chat_id, KIND_NEW_LEAD, team.seller.id)
    ]
    text = await text_of(harness.uow_factory, rows[0])
    assert f"🎯 <b>Новый лид #{lead_id}!</b>" in text
    for part in ("Клиент: Иван Петров", "+998 90 123 45 67", "Источник: Instagram", "Бюджет: $50,000"):
        assert part in text
    assert "Назначен: Продажник Иванов" in text
    captions = [caption for caption, _ in await buttons_of(harness.uow_factory, rows[0])]
    assert captions == ["📇 Открыть карточку", "▶️ Взять в работу"]
    assert [data for _, data in await buttons_of(harness.uow_factory, rows[0])] == [
        LeadCB(action=LeadAction.OPEN, lead_id=lead_id).pack(),
        LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK).pack(),
    ]


async def test_new_lead_is_in_the_salespersons_language_and_currency(
    harness: Harness, team: Team, settings: Settings
) -> None:
    async with harness.uow_factory() as uow:
        await uow.users.set_language(await uow.users.get(team.admin.user, team.seller.id), "en")
        await uow.commit()
    await new_lead(harness.uow_factory, team.mop, assignee=team.seller, budget=1234.5)

    [row] = await outbox_rows(harness.uow_factory)
    assert "🎯 <b>New lead #" in (await text_of(harness.uow_factory, row))
    assert "Budget: $1,234.50" in (await text_of(harness.uow_factory, row))
    assert [caption for caption, _ in await buttons_of(harness.uow_factory, row)] == [
        "📇 Open the card",
        "▶️ Take into work",
    ]


async def test_unassigned_new_lead_without_team_chat_queues_nothing(harness: Harness, team: Team) -> None:
    await new_lead(harness.uow_factory, team.mop)
    assert await outbox_rows(harness.uow_factory) == []


async def test_new_lead_goes_to_the_team_chat_topic_with_a_take_button(team_harness: Harness, team: Team) -> None:
    lead_id = await new_lead(team_harness.uow_factory, team.rop)

    [row] = await outbox_rows(team_harness.uow_factory)
    assert (row.chat_id, row.thread_id, row.kind, row.user_id) == (TEAM_CHAT, TEAM_THREAD, KIND_TEAM_NEW, None)
    assert "Не назначен" in (await text_of(team_harness.uow_factory, row))
    assert await buttons_of(team_harness.uow_factory, row) == [
        ("🙋 Беру!", LeadCB(action=LeadAction.TAKE, lead_id=lead_id).pack())
    ]


async def test_assigned_new_lead_in_the_team_chat_has_no_take_button(team_harness: Harness, team: Team) -> None:
    await new_lead(team_harness.uow_factory, team.rop, assignee=team.seller2)
    rows = await outbox_rows(team_harness.uow_factory)
    assert chats(rows) == sorted([TEAM_CHAT, team.seller2.chat_id])
    team_row = next(row for row in rows if row.chat_id == TEAM_CHAT)
    assert await buttons_of(team_harness.uow_factory, team_row) == []
    assert "Назначен: Второй Продажник" in (await text_of(team_harness.uow_factory, team_row))


# ---- status changes (through the production dispatcher) ------------------------------------------------------


async def test_status_change_reaches_mops_and_rops_but_not_the_author(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        inactive_rop = await add_member(uow, 1101, Role.ROP, "Уволенный", "РОП", active=False)
        english_mop = await add_member(uow, 1102, Role.MOP, "Second", "Mop", language="en")
        await uow.commit()
    lead_id = await new_lead(harness.uow_factory, team.mop, assignee=team.seller)
    await clear_outbox(harness.uow_factory)

    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))

    rows = await outbox_rows(harness.uow_factory)
    assert chats(rows) == sorted([team.rop.chat_id, team.mop.chat_id, english_mop.chat_id])
    assert inactive_rop.chat_id not in chats(rows)
    assert {row.kind for row in rows} == {KIND_STATUS}
    by_chat = {row.chat_id: (await text_of(harness.uow_factory, row)) for row in rows}
    assert "новый → <b>в работе</b>" in by_chat[team.rop.chat_id]
    assert "Изменил: Продажник Иванов" in by_chat[team.rop.chat_id]
    assert "new → <b>in progress</b>" in by_chat[english_mop.chat_id]
    assert "Changed by: Продажник Иванов" in by_chat[english_mop.chat_id]


async def test_status_change_by_a_mop_skips_that_mop(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller)
    await clear_outbox(harness.uow_factory)

    await harness.click(team.mop, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))

    assert chats(await outbox_rows(harness.uow_factory)) == [team.rop.chat_id]


async def test_status_change_is_posted_in_the_team_chat_with_the_refusal_reason(
    team_harness: Harness, team: Team
) -> None:
    lead_id = await new_lead(team_harness.uow_factory, team.mop, assignee=team.seller)
    await clear_outbox(team_harness.uow_factory)
    async with team_harness.uow_factory() as uow:
        await uow.leads.change_status(team.rop.user, lead_id, LeadStatus.REFUSED, reason="Дорого <очень>")
        await uow.commit()

    rows = await outbox_rows(team_harness.uow_factory)
    assert chats(rows) == sorted([TEAM_CHAT, team.mop.chat_id])
    team_row = next(row for row in rows if row.chat_id == TEAM_CHAT)
    assert (team_row.kind, team_row.thread_id) == (KIND_TEAM_STATUS, TEAM_THREAD)
    assert "Причина отказа: Дорого &lt;очень&gt;" in (await text_of(team_harness.uow_factory, team_row))


# ---- reassignment -----------------------------------------------------------------------------------------


async def test_reassignment_tells_the_new_and_the_previous_salesperson(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller)
    await clear_outbox(harness.uow_factory)

    await harness.click(team.mop, AssignCB(lead_id=lead_id, user_id=team.seller2.id))

    rows = await outbox_rows(harness.uow_factory)
    assert [(row.chat_id, row.kind) for row in rows] == [
        (team.seller2.chat_id, KIND_ASSIGNED),
        (team.seller.chat_id, KIND_UNASSIGNED),
    ]
    assigned, unassigned = rows
    assert f"Вам передан лид #{lead_id}" in (await text_of(harness.uow_factory, assigned))
    assert "Передал: Моп Сидоров" in (await text_of(harness.uow_factory, assigned))
    assert [caption for caption, _ in await buttons_of(harness.uow_factory, assigned)] == [
        "📇 Открыть карточку",
        "▶️ Взять в работу",
    ]
    assert "передан другому продажнику: Второй Продажник" in (await text_of(harness.uow_factory, unassigned))
    assert await buttons_of(harness.uow_factory, unassigned) == []  # the card is no longer theirs to open


async def test_reassignment_of_a_lead_in_work_offers_no_take_into_work(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller)
    async with harness.uow_factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.commit()
    await clear_outbox(harness.uow_factory)

    await harness.click(team.rop, AssignCB(lead_id=lead_id, user_id=team.seller2.id))

    assigned = next(row for row in await outbox_rows(harness.uow_factory) if row.kind == KIND_ASSIGNED)
    assert [caption for caption, _ in await buttons_of(harness.uow_factory, assigned)] == ["📇 Открыть карточку"]


async def test_deactivated_previous_salesperson_hears_nothing(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller)
    async with harness.uow_factory() as uow:
        await uow.users.set_active(team.admin.user, team.seller.id, False)
        await uow.leads.assign(team.rop.user, lead_id, team.seller2.id)
        await uow.commit()
    rows = await outbox_rows(harness.uow_factory)
    assert team.seller.chat_id not in chats(rows, KIND_UNASSIGNED)
    assert chats(rows, KIND_ASSIGNED) == [team.seller2.chat_id]


# ---- comments ---------------------------------------------------------------------------------------------


async def test_comment_reaches_the_salesperson_escaped(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller, name="ООО <Ромашка> & Ко")
    await clear_outbox(harness.uow_factory)

    await harness.click(team.mop, LeadCB(action=LeadAction.COMMENT, lead_id=lead_id))
    await harness.send(team.mop, "Перезвонить <b>завтра</b> & уточнить")

    [row] = await outbox_rows(harness.uow_factory)
    assert (row.chat_id, row.kind) == (team.seller.chat_id, KIND_COMMENT)
    text = await text_of(harness.uow_factory, row)
    assert "ООО &lt;Ромашка&gt; &amp; Ко" in text
    assert "Перезвонить &lt;b&gt;завтра&lt;/b&gt; &amp; уточнить" in text
    assert "<b>завтра</b>" not in text
    assert "от Моп Сидоров" in text


async def test_own_comment_notifies_nobody(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller)
    await clear_outbox(harness.uow_factory)

    await harness.click(team.seller, LeadCB(action=LeadAction.COMMENT, lead_id=lead_id))
    await harness.send(team.seller, "Позвонил, думает")

    assert await outbox_rows(harness.uow_factory) == []


async def test_comment_on_an_unassigned_lead_notifies_nobody(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop)
    async with harness.uow_factory() as uow:
        await uow.leads.add_comment(team.mop.user, lead_id, "Кто возьмёт?")
        await uow.commit()
    assert await outbox_rows(harness.uow_factory) == []


# ---- transactions and keys ------------------------------------------------------------------------------


async def test_a_rolled_back_change_queues_nothing(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        lead = await uow.leads.create(
            team.mop.user,
            LeadDraft(client_name="Откат", phone_number="+998901111111", source="Сайт", assigned_to=team.seller.id),
        )
        await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.IN_WORK)
        # no commit: leaving the block rolls back
    assert await outbox_rows(harness.uow_factory) == []


async def test_an_update_that_fails_queues_nothing(harness: Harness, team: Team) -> None:
    lead_id = await new_lead(harness.uow_factory, team.rop, assignee=team.seller)
    await clear_outbox(harness.uow_factory)
    with pytest.raises(DuplicateLead):
        async with harness.uow_factory() as uow:
            await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
            await uow.leads.create(
                team.mop.user, LeadDraft(client_name="Дубль", phone_number="+998901234567", source="Сайт")
            )
            await uow.commit()
    assert await outbox_rows(harness.uow_factory) == []
    async with harness.uow_factory() as uow:
        assert (await uow.leads.get(team.admin.user, lead_id)).status == LeadStatus.NEW


async def test_idempotency_keys_are_unique_and_events_are_never_queued_twice(team_harness: Harness, team: Team) -> None:
    factory = team_harness.uow_factory
    lead_id = await new_lead(factory, team.rop, assignee=team.seller)
    async with factory() as uow:
        # Two moves of one lead in one transaction: two distinct notifications per watcher.
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.CLOSED)
        await uow.leads.assign(team.rop.user, lead_id, team.seller2.id)
        await uow.leads.add_comment(team.rop.user, lead_id, "Готово")
        await uow.commit()
    rows = await outbox_rows(factory)
    keys = [row.idempotency_key for row in rows]
    assert len(keys) == len(set(keys))
    # Watchers (ROP is an author of none of the moves; the MOP neither) got both moves, in order.
    for chat in (team.rop.chat_id, team.mop.chat_id):
        moves = [await text_of(factory, row) for row in rows if row.chat_id == chat and row.kind == KIND_STATUS]
        assert len(moves) == 2
        assert "<b>в работе</b>" in moves[0] and "<b>закрыт</b>" in moves[1]

    # Handing the same events to the sink again (say, a retried commit) adds nothing.
    notifier = NotificationRules(team_harness.settings)
    async with factory() as uow:
        history = await uow.leads.history(team.admin.user, lead_id)
        first_move = next(h.id for h in history if h.action == HistoryAction.STATUS_CHANGED)
        event = LeadStatusChanged(lead_id, team.seller.id, LeadStatus.NEW, LeadStatus.IN_WORK, first_move)
        await notifier(uow, [event])
        await uow.session.flush()
        await uow.commit()
    assert [row.idempotency_key for row in await outbox_rows(factory)] == keys


async def test_a_new_lead_handed_to_the_sink_again_queues_nothing_more(team_harness: Harness, team: Team) -> None:
    factory = team_harness.uow_factory
    lead_id = await new_lead(factory, team.rop, assignee=team.seller)
    first = [(row.idempotency_key, row.payload) for row in await outbox_rows(factory)]
    assert [key for key, _ in first] == [f"new:{lead_id}:{team.seller.id}", f"team:new:{lead_id}"]
    notifier = NotificationRules(team_harness.settings)
    async with factory() as uow:
        created = (await uow.leads.history(team.admin.user, lead_id))[0].id
        await notifier(uow, [LeadCreated(lead_id, team.rop.id, created), LeadCreated(lead_id, team.rop.id, created)])
        await uow.commit()
    assert [(row.idempotency_key, row.payload) for row in await outbox_rows(factory)] == first
