"""The lead card, every action done from it, the refusal/comment/edit conversations, "more" pages,
/assign, and forged or stale buttons — driven through the production dispatcher, checked in the DB."""

from __future__ import annotations

from datetime import date
from typing import Any

from aiogram.methods import EditMessageText, SendMessage
from sqlalchemy import func, select

from bot.presentation.views import format_dt
from db.enums import HistoryAction, LeadStatus, StatusCode
from db.models import Comment, Lead, LeadHistory, MetaLeadgen, User, utcnow
from db.repositories import LeadChanges, LeadDraft
from keyboards.callbacks import (
    CALLBACK_DATA_LIMIT,
    AssignCB,
    EditField,
    LeadAction,
    LeadCB,
    LeadEditCB,
    LeadMoreCB,
    LeadSourceCB,
    LeadStatusCB,
    MoreKind,
)
from tests.conftest import Harness, Member, Team
from tests.fakes import buttons

PHONE = "+998901234567"


async def make_lead(
    harness: Harness,
    team: Team,
    *,
    assigned: Member | None = None,
    name: str = "Иван Петров",
    phone: str = PHONE,
    notes: str | None = "Интересуется 2-комнатной",
    budget: float | None = 50000,
    source: str = "Instagram",
) -> int:
    async with harness.uow_factory() as uow:
        lead = await uow.leads.create(
            team.mop.user,
            LeadDraft(name, phone, source, budget, notes, assigned.id if assigned else None),
        )
        await uow.commit()
        return lead.id


async def load(harness: Harness, lead_id: int) -> Lead:
    """The row as stored, deleted or not."""
    async with harness.uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None
        return lead


async def history(harness: Harness, lead_id: int, action: HistoryAction | None = None) -> list[LeadHistory]:
    async with harness.uow_factory() as uow:
        stmt = select(LeadHistory).where(LeadHistory.lead_id == lead_id).order_by(LeadHistory.id)
        rows = list((await uow.session.scalars(stmt)).all())
    return [r for r in rows if action is None or r.action == action]


async def comment_count(harness: Harness, lead_id: int) -> int:
    async with harness.uow_factory() as uow:
        return int(await uow.session.scalar(select(func.count()).where(Comment.lead_id == lead_id)) or 0)


def datas(harness: Harness, member: Member) -> list[str]:
    return [data for _, data in harness.last_buttons(member.chat_id)]


def assert_within_limits(harness: Harness) -> None:
    """Nothing sent in the test exceeded Telegram's limits."""
    for request in harness.session.requests:
        if isinstance(request, SendMessage | EditMessageText):
            assert len(request.text) <= 4096, len(request.text)
            for _, data in buttons(request.reply_markup):
                assert len(data.encode()) <= CALLBACK_DATA_LIMIT, data
    assert all(len(text) <= 200 for text in harness.alerts())


# ---- the card -------------------------------------------------------------------------------------------


async def test_card_shows_every_field(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    async with harness.uow_factory() as uow:
        await uow.leads.update(team.admin.user, lead_id, LeadChanges(closing_date=date(2025, 12, 5)))
        await uow.leads.add_comment(team.seller.user, lead_id, "Позвонил клиенту")
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.REFUSED, reason="Дорого")
        await uow.commit()
    stored = await load(harness, lead_id)

    await harness.send(team.admin, f"/lead {lead_id}")

    text = harness.last_text(team.admin.chat_id)
    tz = harness.settings.crm.tz
    for expected in (
        f"Лид #{lead_id}",
        "Иван Петров",
        "<code>+998 90 123 45 67</code>",
        "Статус: отказ",
        "Источник: Instagram",
        "Бюджет: $50,000",
        "Интересуется 2-комнатной",
        f"Создан: {format_dt(stored.created_at, tz)}",
        f"Изменён: {format_dt(stored.updated_at, tz)}",
        "Продажник: Продажник Иванов",
        "Создал: Моп Сидоров",
        "Дата закрытия: 05.12.2025",
        "Причина отказа: Дорого",
        "Позвонил клиенту",
        "статус «новый» → «отказ»",
        "дата закрытия: — → 2025-12-05",
    ):
        assert expected in text, expected


async def test_a_meta_leads_card_shows_its_form_ad_and_leadgen_id_escaped(harness: Harness, team: Team) -> None:
    meta_lead = await make_lead(harness, team)
    plain_lead = await make_lead(harness, team, phone="+998901234568")
    async with harness.uow_factory() as uow:
        uow.session.add_all(
            [
                MetaLeadgen(leadgen_id="<b>L7</b>", form_id="F&1", ad_id=None, status="done", lead_id=meta_lead),
                # A later delivery for the same lead (the client came back): the first stays the origin.
                MetaLeadgen(leadgen_id="L8", form_id="F2", ad_id="A2", status="done", lead_id=meta_lead),
            ]
        )
        await uow.commit()

    await harness.send(team.admin, f"/lead {meta_lead}")
    text = harness.last_text(team.admin.chat_id)
    assert "Meta: форма «F&amp;1», объявление «—», lead &lt;b&gt;L7&lt;/b&gt;" in text
    assert "L8" not in text

    await harness.send(team.admin, f"/lead {plain_lead}")
    assert "Meta:" not in harness.last_text(team.admin.chat_id)


async def test_refusal_reason_line_only_for_refused_leads(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await harness.send(team.admin, f"/lead {lead_id}")
    assert "Причина отказа" not in harness.last_text(team.admin.chat_id)
    assert "Продажник: —" in harness.last_text(team.admin.chat_id)


async def test_user_text_is_escaped_everywhere(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, name="<b>Иван</b>", notes="<b>note</b> & <i>", assigned=team.seller)
    async with harness.uow_factory() as uow:
        await uow.leads.add_comment(team.seller.user, lead_id, "<b>comment</b>")
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.REFUSED, reason="<b>reason</b>")
        await uow.commit()
    await harness.send(team.admin, f"/lead {lead_id}")
    text = harness.last_text(team.admin.chat_id)
    for raw in ("Иван", "note", "comment", "reason"):
        assert f"&lt;b&gt;{raw}&lt;/b&gt;" in text
        assert f"<b>{raw}</b>" not in text
    assert "&amp; &lt;i&gt;" in text


async def test_lead_without_a_number_or_with_garbage_gets_usage(harness: Harness, team: Team) -> None:
    for command in ("/lead", "/lead abc", "/lead 12x", "/lead -3"):
        await harness.send(team.admin, command)
        assert "/lead &lt;номер лида&gt;" in harness.last_text(team.admin.chat_id), command
    await harness.send(team.admin, "/lead #777")
    assert "#777 не найден" in harness.last_text(team.admin.chat_id)


async def test_open_button_sends_the_card_anew(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await harness.click(team.mop, LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    last = harness.last(team.mop.chat_id)
    assert isinstance(last, SendMessage) and f"Лид #{lead_id}" in last.text


# ---- status ---------------------------------------------------------------------------------------------


async def test_status_change_from_the_card(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.send(team.seller, f"/lead {lead_id}")
    await harness.press(team.seller, "Статус")
    moves = datas(harness, team.seller)
    assert LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK).pack() in moves
    assert LeadStatusCB(lead_id=lead_id, code=StatusCode.CLOSED).pack() not in moves

    await harness.press(team.seller, "в работе")

    assert (await load(harness, lead_id)).status == LeadStatus.IN_WORK
    rows = await history(harness, lead_id, HistoryAction.STATUS_CHANGED)
    assert [(r.old_value, r.new_value, r.changed_by_id) for r in rows] == [("новый", "в работе", team.seller.id)]
    last = harness.last(team.seller.chat_id)
    assert isinstance(last, EditMessageText)
    assert "Статус изменён: «новый» → «в работе»" in last.text and "Статус: в работе" in last.text
    assert any("в работе" in alert for alert in harness.alerts())
    # The redrawn card offers the next moves.
    await harness.press(team.seller, "Статус")
    assert LeadStatusCB(lead_id=lead_id, code=StatusCode.CLOSED).pack() in datas(harness, team.seller)


async def test_refusal_asks_for_a_reason_and_keeps_it(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED))
    assert "Почему клиент отказался" in harness.last_text(team.seller.chat_id)
    assert (await load(harness, lead_id)).status == LeadStatus.NEW

    await harness.send(team.seller, None)  # a sticker or photo
    assert "Нужен текст" in harness.last_text(team.seller.chat_id)
    await harness.send(team.seller, "x" * 501)
    assert "длиннее 500" in harness.last_text(team.seller.chat_id)
    assert (await load(harness, lead_id)).status == LeadStatus.NEW

    await harness.send(team.seller, "Нашёл дешевле")

    lead = await load(harness, lead_id)
    assert lead.status == LeadStatus.REFUSED and lead.refusal_reason == "Нашёл дешевле"
    rows = await history(harness, lead_id, HistoryAction.STATUS_CHANGED)
    assert [(r.old_value, r.new_value) for r in rows] == [("новый", "отказ")]
    text = harness.last_text(team.seller.chat_id)
    assert "Причина сохранена" in text and "Причина отказа: Нашёл дешевле" in text
    # The conversation is over: the next text is not another reason.
    await harness.send(team.seller, "ещё текст")
    assert "Не понимаю" in harness.last_text(team.seller.chat_id)
    assert_within_limits(harness)


async def test_refusal_cancelled_changes_nothing(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED))
    await harness.send(team.seller, "/cancel")
    assert "Отменено" in harness.last_text(team.seller.chat_id)
    await harness.send(team.seller, "Нашёл дешевле")
    lead = await load(harness, lead_id)
    assert lead.status == LeadStatus.NEW and lead.refusal_reason is None
    assert await history(harness, lead_id, HistoryAction.STATUS_CHANGED) == []


async def test_refusal_of_a_lead_deleted_meanwhile(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED))
    async with harness.uow_factory() as uow:
        await uow.leads.delete(team.rop.user, lead_id)
        await uow.commit()
    await harness.send(team.seller, "Дорого")
    assert f"#{lead_id} не найден" in harness.last_text(team.seller.chat_id)
    assert (await load(harness, lead_id)).status == LeadStatus.NEW
    # The conversation ended with the lead.
    await harness.send(team.seller, "Дорого")
    assert "Не понимаю" in harness.last_text(team.seller.chat_id)


async def test_refusal_not_allowed_is_refused_before_asking(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    async with harness.uow_factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.CLOSED)
        await uow.commit()
    harness.session.clear()
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED))
    assert harness.session.messages() == []
    assert any("закрыт" in alert for alert in harness.alerts())
    assert (await load(harness, lead_id)).status == LeadStatus.CLOSED


# ---- comments -------------------------------------------------------------------------------------------


async def test_comment_is_stored_and_shown(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.send(team.seller, f"/lead {lead_id}")
    await harness.press(team.seller, "Комментарий")
    assert "Комментарий к лиду" in harness.last_text(team.seller.chat_id)
    await harness.send(team.seller, "x" * 2001)
    assert "длиннее 2000" in harness.last_text(team.seller.chat_id)
    assert await comment_count(harness, lead_id) == 0

    await harness.send(team.seller, "Клиент просит <b>планировки</b>")

    async with harness.uow_factory() as uow:
        stored = (await uow.session.scalars(select(Comment).where(Comment.lead_id == lead_id))).all()
    assert [(c.text, c.created_by_id) for c in stored] == [("Клиент просит <b>планировки</b>", team.seller.id)]
    text = harness.last_text(team.seller.chat_id)
    assert "Комментарий добавлен" in text and "Клиент просит &lt;b&gt;планировки&lt;/b&gt;" in text


# ---- assigning ------------------------------------------------------------------------------------------


async def test_reassign_from_the_card(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.send(team.mop, f"/lead {lead_id}")
    await harness.press(team.mop, "Назначить")
    choices = datas(harness, team.mop)
    assert AssignCB(lead_id=lead_id, user_id=team.seller2.id).pack() in choices
    assert AssignCB(lead_id=lead_id, user_id=team.inactive.id).pack() not in choices
    assert AssignCB(lead_id=lead_id, user_id=team.mop.id).pack() not in choices

    await harness.press(team.mop, "Второй")

    assert (await load(harness, lead_id)).assigned_to_id == team.seller2.id
    rows = await history(harness, lead_id, HistoryAction.ASSIGNED)
    assert (rows[-1].old_value, rows[-1].new_value) == ("Продажник Иванов", "Второй Продажник")
    assert "Лид назначен: Второй Продажник" in harness.last_text(team.mop.chat_id)


async def _set_username(harness: Harness, member: Member, username: str) -> None:
    async with harness.uow_factory() as uow:
        user = await uow.session.get(User, member.id)
        assert user is not None
        user.username = username
        await uow.commit()


async def test_assign_command_in_all_its_forms(harness: Harness, team: Team) -> None:
    await _set_username(harness, team.seller2, "second_seller")
    lead_id = await make_lead(harness, team)
    chat = team.rop.chat_id

    await harness.send(team.rop, f"/assign {lead_id} @Second_Seller")
    assert (await load(harness, lead_id)).assigned_to_id == team.seller2.id
    assert "Лид назначен" in harness.last_text(chat) and f"Лид #{lead_id}" in harness.last_text(chat)

    await harness.send(team.rop, f"/assign {lead_id} #{team.seller.id}")
    assert (await load(harness, lead_id)).assigned_to_id == team.seller.id

    await harness.send(team.rop, f"/assign {lead_id} {team.seller2.chat_id}")
    assert (await load(harness, lead_id)).assigned_to_id == team.seller2.id

    await harness.send(team.rop, f"/assign {lead_id}")
    assert "Кому назначить" in harness.last_text(chat)
    assert AssignCB(lead_id=lead_id, user_id=team.seller.id).pack() in datas(harness, team.rop)
    await harness.press(team.rop, "Продажник Иванов")
    assert (await load(harness, lead_id)).assigned_to_id == team.seller.id
    assert "Лид назначен" in harness.last_text(chat)

    rows = await history(harness, lead_id, HistoryAction.ASSIGNED)
    assert [r.new_value for r in rows] == [
        "Второй Продажник",
        "Продажник Иванов",
        "Второй Продажник",
        "Продажник Иванов",
    ]


async def test_assign_command_errors(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    chat = team.admin.chat_id
    for command in ("/assign", "/assign abc", f"/assign {lead_id} @a @b"):
        await harness.send(team.admin, command)
        assert "/assign &lt;номер лида&gt;" in harness.last_text(chat), command
    for who in ("@nobody", "#9999", "424242", "x"):
        await harness.send(team.admin, f"/assign {lead_id} {who}")
        assert f"Пользователь {who} не найден" in harness.last_text(chat), who
    await harness.send(team.admin, f"/assign {lead_id} #{team.mop.id}")
    assert "только активного продажника" in harness.last_text(chat)
    await harness.send(team.admin, f"/assign {lead_id} #{team.inactive.id}")
    assert "только активного продажника" in harness.last_text(chat)
    await harness.send(team.admin, f"/assign {lead_id} #{team.seller.id}")
    assert "уже назначен этому продажнику" in harness.last_text(chat)
    await harness.send(team.admin, f"/assign 9999 #{team.seller2.id}")
    assert "#9999 не найден" in harness.last_text(chat)
    assert (await load(harness, lead_id)).assigned_to_id == team.seller.id


async def test_assign_command_is_for_managers_only(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    for member in (team.seller, team.finance):
        await harness.send(member, f"/assign {lead_id} #{team.seller2.id}")
        assert "Назначать лиды могут администратор, РОП и МОП" in harness.last_text(member.chat_id)
        await harness.send(member, f"/assign {lead_id}")
        assert "Назначать лиды могут" in harness.last_text(member.chat_id)
    assert (await load(harness, lead_id)).assigned_to_id == team.seller.id


# ---- editing --------------------------------------------------------------------------------------------


async def _edit(harness: Harness, member: Member, lead_id: int, field: EditField) -> None:
    await harness.click(member, LeadEditCB(lead_id=lead_id, field=field))


async def test_edit_menu_lists_every_field(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await harness.send(team.mop, f"/lead {lead_id}")
    await harness.press(team.mop, "Изменить")
    shown = datas(harness, team.mop)
    for field in EditField:
        assert LeadEditCB(lead_id=lead_id, field=field).pack() in shown
    assert LeadCB(action=LeadAction.CARD, lead_id=lead_id).pack() in shown


async def test_edit_name_with_bad_input(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _edit(harness, team.mop, lead_id, EditField.CLIENT_NAME)
    assert "новое имя клиента" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "Я" * 201)
    assert "длиннее 200" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "  Пётр   Иванов ")
    assert (await load(harness, lead_id)).client_name == "Пётр Иванов"
    rows = await history(harness, lead_id, HistoryAction.UPDATED)
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [("client_name", "Иван Петров", "Пётр Иванов")]
    assert "Изменено: имя клиента" in harness.last_text(team.mop.chat_id)


async def test_edit_phone_with_bad_input_and_a_duplicate(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    other_id = await make_lead(harness, team, phone="+998901112233")
    await _edit(harness, team.mop, lead_id, EditField.PHONE_NUMBER)
    await harness.send(team.mop, "позвоните мне")
    assert "Неверный номер" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "+998 90 111 22 33")
    assert f"уже есть: #{other_id}" in harness.last_text(team.mop.chat_id)
    assert (await load(harness, lead_id)).phone_number == PHONE
    # Still in the conversation: another number is taken.
    await harness.send(team.mop, "90 999 88 77")
    assert (await load(harness, lead_id)).phone_number == "+998909998877"
    rows = await history(harness, lead_id, HistoryAction.UPDATED)
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [("phone_number", PHONE, "+998909998877")]


async def test_edit_source_by_buttons(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _edit(harness, team.mop, lead_id, EditField.SOURCE)
    shown = datas(harness, team.mop)
    sources = harness.settings.crm.sources
    assert [LeadSourceCB(lead_id=lead_id, index=i).pack() for i in range(len(sources))] == shown[: len(sources)]
    await harness.press(team.mop, "Сайт")
    assert (await load(harness, lead_id)).source == "Сайт"
    rows = await history(harness, lead_id, HistoryAction.UPDATED)
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [("source", "Instagram", "Сайт")]
    assert isinstance(harness.last(team.mop.chat_id), EditMessageText)
    # Choosing the same source again changes nothing and says so.
    await harness.click(team.mop, LeadSourceCB(lead_id=lead_id, index=sources.index("Сайт")))
    assert "ничего не изменилось" in harness.last_text(team.mop.chat_id)
    assert len(await history(harness, lead_id, HistoryAction.UPDATED)) == 1


async def test_edit_budget_with_bad_input(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _edit(harness, team.mop, lead_id, EditField.BUDGET)
    assert "$50,000" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "много")
    assert "Бюджет — число" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "75k")
    assert (await load(harness, lead_id)).budget == 75000
    rows = await history(harness, lead_id, HistoryAction.UPDATED)
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [("budget", "50000", "75000")]
    assert "Бюджет: $75,000" in harness.last_text(team.mop.chat_id)


async def test_edit_notes_and_clear_them(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _edit(harness, team.mop, lead_id, EditField.NOTES)
    assert LeadEditCB(lead_id=lead_id, field=EditField.NOTES, clear=True).pack() in datas(harness, team.mop)
    await harness.send(team.mop, "n" * 2001)
    assert "длиннее 2000" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "Хочет вид на парк")
    assert (await load(harness, lead_id)).notes == "Хочет вид на парк"

    await _edit(harness, team.mop, lead_id, EditField.NOTES)
    await harness.press(team.mop, "Очистить")
    assert (await load(harness, lead_id)).notes is None
    assert "Очищено: заметки" in harness.last_text(team.mop.chat_id)
    rows = await history(harness, lead_id, HistoryAction.UPDATED)
    assert [(r.old_value, r.new_value) for r in rows] == [
        ("Интересуется 2-комнатной", "Хочет вид на парк"),
        ("Хочет вид на парк", None),
    ]
    # Clearing ended the conversation.
    await harness.send(team.mop, "поздний текст")
    assert (await load(harness, lead_id)).notes is None


async def test_edit_closing_date_and_clear_it(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _edit(harness, team.mop, lead_id, EditField.CLOSING_DATE)
    for bad in ("завтра", "31.02.2025", "2025/12/05"):
        await harness.send(team.mop, bad)
        assert "Дата в формате" in harness.last_text(team.mop.chat_id), bad
    await harness.send(team.mop, "05.12.2025")
    assert (await load(harness, lead_id)).closing_date == date(2025, 12, 5)
    assert "Дата закрытия: 05.12.2025" in harness.last_text(team.mop.chat_id)

    await harness.click(team.mop, LeadEditCB(lead_id=lead_id, field=EditField.CLOSING_DATE, clear=True))
    assert (await load(harness, lead_id)).closing_date is None
    rows = await history(harness, lead_id, HistoryAction.UPDATED)
    assert [(r.field, r.old_value, r.new_value) for r in rows] == [
        ("closing_date", None, "2025-12-05"),
        ("closing_date", "2025-12-05", None),
    ]


async def test_edit_cancelled_changes_nothing(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _edit(harness, team.mop, lead_id, EditField.CLIENT_NAME)
    await harness.send(team.mop, None)
    assert "Нужен текст" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "/cancel")
    await harness.send(team.mop, "Другое имя")
    assert (await load(harness, lead_id)).client_name == "Иван Петров"
    assert await history(harness, lead_id, HistoryAction.UPDATED) == []


# ---- deleting -------------------------------------------------------------------------------------------


async def test_delete_abort_then_confirm(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await harness.send(team.rop, f"/lead {lead_id}")
    await harness.press(team.rop, "Удалить")
    assert f"Удалить лид #{lead_id}?" in harness.last_text(team.rop.chat_id)
    assert datas(harness, team.rop) == [
        LeadCB(action=LeadAction.DELETE_CONFIRM, lead_id=lead_id).pack(),
        LeadCB(action=LeadAction.CARD, lead_id=lead_id).pack(),
    ]
    await harness.press(team.rop, "Нет")
    assert (await load(harness, lead_id)).deleted_at is None
    assert "Удалить лид" not in harness.last_text(team.rop.chat_id)
    assert LeadCB(action=LeadAction.DELETE, lead_id=lead_id).pack() in datas(harness, team.rop)

    await harness.press(team.rop, "Удалить")
    await harness.press(team.rop, "Да, удалить")

    lead = await load(harness, lead_id)
    assert lead.deleted_at is not None and lead.deleted_by_id == team.rop.id
    assert [r.old_value for r in await history(harness, lead_id, HistoryAction.DELETED)] == ["новый"]
    assert f"Лид #{lead_id} удалён" in harness.last_text(team.rop.chat_id)
    assert harness.last_buttons(team.rop.chat_id) == []
    # A second confirm (double tap, old keyboard) finds nothing to delete.
    await harness.click(team.rop, LeadCB(action=LeadAction.DELETE_CONFIRM, lead_id=lead_id))
    assert any(f"#{lead_id} не найден" in alert for alert in harness.alerts())
    assert len(await history(harness, lead_id, HistoryAction.DELETED)) == 1
    await harness.send(team.rop, f"/lead {lead_id}")
    assert "не найден" in harness.last_text(team.rop.chat_id)


# ---- long cards and "more" -------------------------------------------------------------------------------


async def _add_comments(harness: Harness, team: Team, lead_id: int, count: int, length: int) -> None:
    async with harness.uow_factory() as uow:
        now = utcnow()
        uow.session.add_all(
            Comment(
                lead_id=lead_id,
                text=f"<{i:03d}>" + "й" * (length - 5),
                created_by_id=team.seller.id,
                created_at=now,
            )
            for i in range(count)
        )
        await uow.commit()


async def test_card_of_a_lead_with_200_long_comments(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, name="Я" * 200, notes="N" * 2000, assigned=team.seller)
    async with harness.uow_factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.REFUSED, reason="R" * 500)
        await uow.commit()
    await _add_comments(harness, team, lead_id, 200, 2000)

    await harness.send(team.seller, f"/lead {lead_id}")
    text = harness.last_text(team.seller.chat_id)
    assert len(text) <= 4096
    assert "&lt;199&gt;" in text  # the newest comment is on the card
    assert LeadCB(action=LeadAction.MORE_COMMENTS, lead_id=lead_id).pack() in datas(harness, team.seller)

    await harness.press(team.seller, "Все комментарии")
    seen: list[str] = []
    for _ in range(250):
        page = harness.last_text(team.seller.chat_id)
        assert len(page) <= 4096
        found = [f"{i:03d}" for i in range(200) if f"&lt;{i:03d}&gt;" in page]
        seen += sorted(found, key=lambda n: page.index(f"&lt;{n}&gt;"))
        older = [d for t, d in harness.last_buttons(team.seller.chat_id) if "Старше" in t]
        if not older:
            break
        await harness.click(team.seller, older[0])
    assert seen == [f"{i:03d}" for i in reversed(range(200))]
    assert_within_limits(harness)


async def test_more_buttons_only_when_there_is_more(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    await _add_comments(harness, team, lead_id, 5, 20)
    await harness.send(team.admin, f"/lead {lead_id}")
    shown = datas(harness, team.admin)
    assert LeadCB(action=LeadAction.MORE_COMMENTS, lead_id=lead_id).pack() not in shown
    assert LeadCB(action=LeadAction.MORE_HISTORY, lead_id=lead_id).pack() not in shown
    await _add_comments(harness, team, lead_id, 1, 20)
    await harness.send(team.admin, f"/lead {lead_id}")
    assert LeadCB(action=LeadAction.MORE_COMMENTS, lead_id=lead_id).pack() in datas(harness, team.admin)
    assert "последние 5 из 6" in harness.last_text(team.admin.chat_id)


async def test_more_history_pages_through_every_row(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team)
    async with harness.uow_factory() as uow:
        for i in range(30):
            await uow.leads.update(team.mop.user, lead_id, LeadChanges(notes=f"note-{i:02d} " + "z" * 1500))
        await uow.commit()
    await harness.send(team.admin, f"/lead {lead_id}")
    assert "последние 5 из 31" in harness.last_text(team.admin.chat_id)
    await harness.press(team.admin, "Вся история")
    pages = 0
    seen: list[str] = []
    while True:
        pages += 1
        page = harness.last_text(team.admin.chat_id)
        found = [f"{i:02d}" for i in range(30) if f"→ note-{i:02d}" in page]
        seen += sorted(found, key=lambda n: page.index(f"→ note-{n}"))
        older = [d for t, d in harness.last_buttons(team.admin.chat_id) if "Старше" in t]
        if not older:
            break
        await harness.click(team.admin, older[0])
    assert "лид создан" in harness.last_text(team.admin.chat_id)
    assert seen == [f"{i:02d}" for i in reversed(range(30))]
    assert pages == 4  # 31 rows, 10 a page
    assert_within_limits(harness)


# ---- forged and stale buttons ---------------------------------------------------------------------------


async def _snapshot(harness: Harness, lead_id: int) -> tuple[Any, ...]:
    lead = await load(harness, lead_id)
    return (
        lead.status,
        lead.assigned_to_id,
        lead.source,
        lead.notes,
        lead.closing_date,
        lead.deleted_at,
        len(await history(harness, lead_id)),
        await comment_count(harness, lead_id),
    )


async def test_old_status_keyboard_after_the_lead_moved(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))
    before = await _snapshot(harness, lead_id)
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))
    assert any("Нельзя перевести лид из «в работе» в «в работе»" in a for a in harness.alerts())
    await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.NEW))
    assert any("Открыть закрытый лид" in a or "Нельзя перевести" in a for a in harness.alerts()[-1:])
    assert await _snapshot(harness, lead_id) == before


async def test_buttons_of_a_deleted_lead(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    async with harness.uow_factory() as uow:
        await uow.leads.delete(team.admin.user, lead_id)
        await uow.commit()
    before = await _snapshot(harness, lead_id)
    presses = [
        LeadCB(action=LeadAction.OPEN, lead_id=lead_id),
        LeadCB(action=LeadAction.STATUS, lead_id=lead_id),
        LeadCB(action=LeadAction.COMMENT, lead_id=lead_id),
        LeadCB(action=LeadAction.ASSIGN, lead_id=lead_id),
        LeadCB(action=LeadAction.EDIT, lead_id=lead_id),
        LeadCB(action=LeadAction.MORE_COMMENTS, lead_id=lead_id),
        LeadMoreCB(kind=MoreKind.HISTORY, lead_id=lead_id, before_id=5),
        LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK),
        LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED),
        AssignCB(lead_id=lead_id, user_id=team.seller2.id),
        LeadEditCB(lead_id=lead_id, field=EditField.NOTES),
        LeadEditCB(lead_id=lead_id, field=EditField.NOTES, clear=True),
        LeadSourceCB(lead_id=lead_id, index=1),
    ]
    for data in presses:
        harness.session.clear()
        await harness.click(team.admin, data)
        assert harness.alerts() == [f"Лид #{lead_id} не найден (или удалён)."], data
        assert harness.session.messages() == [], data
    assert await _snapshot(harness, lead_id) == before


async def test_forged_buttons_on_someone_elses_lead(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller2)
    before = await _snapshot(harness, lead_id)
    presses = [
        LeadCB(action=LeadAction.OPEN, lead_id=lead_id),
        LeadCB(action=LeadAction.STATUS, lead_id=lead_id),
        LeadCB(action=LeadAction.COMMENT, lead_id=lead_id),
        LeadCB(action=LeadAction.EDIT, lead_id=lead_id),
        LeadCB(action=LeadAction.MORE_HISTORY, lead_id=lead_id),
        LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK),
        LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED),
        LeadEditCB(lead_id=lead_id, field=EditField.CLIENT_NAME),
        LeadEditCB(lead_id=lead_id, field=EditField.CLOSING_DATE, clear=True),
        LeadSourceCB(lead_id=lead_id, index=2),
    ]
    for data in presses:
        harness.session.clear()
        await harness.click(team.seller, data)
        assert harness.alerts() == ["Этот лид назначен другому продажнику."], data
        assert harness.session.messages() == [], data
    for data in (
        LeadCB(action=LeadAction.ASSIGN, lead_id=lead_id),
        AssignCB(lead_id=lead_id, user_id=team.seller.id),
    ):
        harness.session.clear()
        await harness.click(team.seller, data)
        assert harness.alerts() == ["Назначать лиды могут администратор, РОП и МОП."], data
    for data in (
        LeadCB(action=LeadAction.DELETE, lead_id=lead_id),
        LeadCB(action=LeadAction.DELETE_CONFIRM, lead_id=lead_id),
    ):
        harness.session.clear()
        await harness.click(team.mop, data)
        assert harness.alerts() == ["Удалять лиды могут только администратор и РОП."], data
    # Nothing conversational was started either: a text now is just an unknown message.
    await harness.send(team.seller, "текст")
    assert "Не понимаю" in harness.last_text(team.seller.chat_id)
    assert await _snapshot(harness, lead_id) == before


async def test_stale_assign_and_bad_values(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    before = await _snapshot(harness, lead_id)
    cases = [
        (AssignCB(lead_id=lead_id, user_id=team.inactive.id), "только активного продажника"),
        (AssignCB(lead_id=lead_id, user_id=team.mop.id), "только активного продажника"),
        (AssignCB(lead_id=lead_id, user_id=team.seller.id), "уже назначен"),
        (LeadSourceCB(lead_id=lead_id, index=99), "устарела"),
        (LeadEditCB(lead_id=lead_id, field=EditField.CLIENT_NAME, clear=True), "устарела"),
        (f"ls:{lead_id}:9", "устарела"),  # a status code that does not exist
        ("ld:zz:1", "устарела"),
    ]
    for data, expected in cases:
        harness.session.clear()
        await harness.click(team.admin, data)
        assert len(harness.alerts()) == 1 and expected in harness.alerts()[0], data
    assert await _snapshot(harness, lead_id) == before


async def test_a_deactivated_member_cannot_press_old_buttons(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness, team, assigned=team.seller)
    before = await _snapshot(harness, lead_id)
    await harness.click(team.inactive, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))
    assert any("отключ" in a for a in harness.alerts())
    assert await _snapshot(harness, lead_id) == before
