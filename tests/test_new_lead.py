"""/new end to end: the production dispatcher, the recorded Bot API calls and the database."""

from __future__ import annotations

import pytest
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage
from aiogram.types import Contact, InlineKeyboardMarkup
from sqlalchemy import select

from bot.texts import texts_for
from db.enums import HistoryAction, LeadStatus, Role
from db.models import Lead, LeadHistory
from db.repositories import LeadDraft
from db.validation import MAX_NAME, MAX_NOTES
from handlers.new_lead import NewLead
from keyboards.callbacks import CALLBACK_DATA_LIMIT, LeadAction, LeadCB, MenuAction, MenuCB, NewLeadAction, NewLeadCB
from tests.conftest import Harness, Member, Team
from tests.fakes import buttons

T = texts_for("ru")
PHONE = "+998901234567"


# ---- helpers -------------------------------------------------------------------------------------------


async def state_of(harness: Harness, member: Member) -> str | None:
    context = harness.dp.fsm.get_context(bot=harness.bot, chat_id=member.chat_id, user_id=member.tg.id)
    return await context.get_state()


async def all_leads(harness: Harness) -> list[Lead]:
    async with harness.uow_factory() as uow:
        return list((await uow.session.scalars(select(Lead).order_by(Lead.id))).all())


async def history_of(harness: Harness, lead_id: int) -> list[LeadHistory]:
    async with harness.uow_factory() as uow:
        rows = await uow.session.scalars(select(LeadHistory).where(LeadHistory.lead_id == lead_id))
        return list(rows.all())


async def existing_lead(harness: Harness, author: Member, phone: str = PHONE, assignee: Member | None = None) -> int:
    async with harness.uow_factory() as uow:
        lead = await uow.leads.create(
            author.user,
            LeadDraft(
                client_name="Уже есть",
                phone_number=phone,
                source="Сайт",
                assigned_to=assignee.id if assignee else None,
            ),
        )
        await uow.commit()
        return lead.id


def captions(harness: Harness, member: Member) -> list[str]:
    return [text for text, _ in harness.last_buttons(member.chat_id)]


STEPS = ["name", "phone", "source", "budget", "notes", "assignee", "confirm"]


async def walk(harness: Harness, member: Member, until: str, *, name: str = "Иван Петров") -> None:
    """Start /new and answer every step before ``until`` with a good value."""
    await harness.send(member, "/new")
    answers = [
        lambda: harness.send(member, name),
        lambda: harness.send(member, "+998 90 123-45-67"),
        lambda: harness.press(member, "Instagram"),
        lambda: harness.send(member, "50k"),
        lambda: harness.send(member, "Хочет 2-комнатную"),
        lambda: harness.press(member, "Иванов"),
    ]
    for step, answer in zip(STEPS, answers, strict=False):
        if step == until:
            break
        await answer()
    assert await state_of(harness, member) == getattr(NewLead, until).state


# ---- the happy path ------------------------------------------------------------------------------------


async def test_happy_path_creates_the_lead_with_history(harness: Harness, team: Team) -> None:
    mop = team.mop
    await harness.send(mop, "/new")
    assert T.t("newlead.ask_name") in harness.last_text(mop.chat_id)
    await harness.send(mop, "Иван Петров")
    assert "+998" in harness.last_text(mop.chat_id)  # the phone question carries an example
    await harness.send(mop, "+998 90 123-45-67")
    assert captions(harness, mop)[:6] == harness.settings.crm.sources
    await harness.press(mop, "Instagram")
    await harness.send(mop, "50k")
    await harness.send(mop, "Интересуется 2-комнатной квартирой")
    assert {"Продажник Иванов", "Второй Продажник"} <= set(captions(harness, mop))
    assert not any("Бывший" in c or "Моп" in c or "Админ" in c for c in captions(harness, mop))
    await harness.press(mop, "Иванов")

    summary = harness.last_text(mop.chat_id)
    for part in ("Иван Петров", "+998 90 123 45 67", "Instagram", "$50,000", "2-комнатной", "Продажник Иванов"):
        assert part in summary
    assert await all_leads(harness) == []  # nothing is written before Create

    await harness.press(mop, "Создать")
    (lead,) = await all_leads(harness)
    assert lead.client_name == "Иван Петров"
    assert lead.phone_number == PHONE
    assert lead.source == "Instagram"
    assert lead.budget == 50_000
    assert lead.notes == "Интересуется 2-комнатной квартирой"
    assert lead.assigned_to_id == team.seller.id
    assert lead.created_by_id == mop.id
    assert lead.status == LeadStatus.NEW
    actions = [row.action for row in await history_of(harness, lead.id)]
    assert actions == [HistoryAction.CREATED, HistoryAction.ASSIGNED]

    assert T.t("newlead.created", lead_id=lead.id) in harness.last_text(mop.chat_id)
    open_card = LeadCB(action=LeadAction.OPEN, lead_id=lead.id).pack()
    assert (T.t("newlead.btn.open"), open_card) in harness.last_buttons(mop.chat_id)
    assert await state_of(harness, mop) is None


@pytest.mark.parametrize("typed", ["+998 90 123-45-67", "90 123 45 67", "998901234567", "+998 (90) 123.45.67"])
async def test_every_common_phone_spelling_is_stored_as_e164(harness: Harness, team: Team, typed: str) -> None:
    await walk(harness, team.rop, "phone")
    await harness.send(team.rop, typed)
    assert await state_of(harness, team.rop) == NewLead.source.state
    assert "+998 90 123 45 67" in (await _finish(harness, team.rop))
    (lead,) = await all_leads(harness)
    assert lead.phone_number == PHONE


async def _finish(harness: Harness, member: Member) -> str:
    """From the source step: skip what can be skipped and show the summary; returns it."""
    await harness.press(member, "Сайт")
    await harness.press(member, T.t("common.skip"))
    await harness.press(member, T.t("common.skip"))
    await harness.press(member, T.t("common.skip"))
    summary = harness.last_text(member.chat_id)
    await harness.press(member, "Создать")
    return summary


async def test_a_shared_contact_is_the_phone(harness: Harness, team: Team) -> None:
    await walk(harness, team.admin, "phone")
    contact = Contact(phone_number="998901234567", first_name="Иван")
    await harness.send(team.admin, contact=contact)
    assert await state_of(harness, team.admin) == NewLead.source.state
    await _finish(harness, team.admin)
    (lead,) = await all_leads(harness)
    assert lead.phone_number == PHONE


async def test_skip_buttons_leave_the_optional_fields_empty(harness: Harness, team: Team) -> None:
    await walk(harness, team.mop, "budget")
    await harness.press(team.mop, T.t("common.skip"))
    assert await state_of(harness, team.mop) == NewLead.notes.state
    await harness.press(team.mop, T.t("common.skip"))
    assert await state_of(harness, team.mop) == NewLead.assignee.state
    await harness.press(team.mop, T.t("common.skip"))
    assert await state_of(harness, team.mop) == NewLead.confirm.state
    summary = harness.last_text(team.mop.chat_id)
    assert T.t("newlead.field.budget", value="—") in summary
    assert T.t("newlead.field.assignee", value="—") in summary
    await harness.press(team.mop, "Создать")
    (lead,) = await all_leads(harness)
    assert (lead.budget, lead.notes, lead.assigned_to_id) == (None, None, None)
    assert lead.source == "Instagram"
    assert [row.action for row in await history_of(harness, lead.id)] == [HistoryAction.CREATED]


async def test_the_menu_button_starts_the_conversation(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, MenuCB(action=MenuAction.NEW))
    assert T.t("newlead.ask_name") in harness.last_text(team.rop.chat_id)
    assert await state_of(harness, team.rop) == NewLead.name.state


async def test_new_mid_conversation_starts_over_with_an_empty_draft(harness: Harness, team: Team) -> None:
    await walk(harness, team.mop, "source", name="Первый")
    await harness.send(team.mop, "/new")
    assert await state_of(harness, team.mop) == NewLead.name.state
    await harness.send(team.mop, "Второй")
    await harness.send(team.mop, "90 765 43 21")
    summary = await _finish(harness, team.mop)
    assert "Второй" in summary and "Первый" not in summary


# ---- bad input, step by step, with the draft kept ------------------------------------------------------


async def test_bad_input_at_every_step_is_explained_and_the_draft_kept(harness: Harness, team: Team) -> None:
    mop, chat = team.mop, team.mop.chat_id
    await harness.send(mop, "/new")

    # name: no text (a sticker or photo), blank, too long
    await harness.send(mop, None)
    assert T.t("newlead.need_text") in harness.last_text(chat)
    await harness.send(mop, "   ")
    assert T.t("invalid.name_empty") in harness.last_text(chat)
    await harness.send(mop, "Я" * (MAX_NAME + 1))
    assert T.t("invalid.name_too_long", limit=MAX_NAME) in harness.last_text(chat)
    assert T.t("newlead.ask_name") in harness.last_text(chat)  # asked again
    assert await state_of(harness, mop) == NewLead.name.state
    await harness.send(mop, "  Иван   Петров ")

    # phone: letters, too few digits, no text
    await harness.send(mop, "позвонить завтра")
    assert "Неверный номер телефона" in harness.last_text(chat)
    assert "<code>+998" in harness.last_text(chat)  # with an example
    await harness.send(mop, "12345")
    assert "Неверный номер телефона" in harness.last_text(chat)
    await harness.send(mop, None)
    assert T.t("newlead.need_phone") in harness.last_text(chat)
    assert await state_of(harness, mop) == NewLead.phone.state
    await harness.send(mop, "90 123 45 67")

    # source: an unknown name and no text re-show the buttons; a forged index is refused
    await harness.send(mop, "Телевизор")
    assert T.t("invalid.source_unknown") in harness.last_text(chat)
    assert "Instagram" in captions(harness, mop)
    await harness.send(mop, None)
    assert T.t("newlead.use_buttons") in harness.last_text(chat)
    assert "Instagram" in captions(harness, mop)
    await harness.click(mop, NewLeadCB(action=NewLeadAction.SOURCE, value=99))
    assert harness.alerts()[-1] == T.t("invalid.source_unknown")
    assert await state_of(harness, mop) == NewLead.source.state
    await harness.send(mop, "  google ads ")  # a typed name, any case

    # budget
    await harness.send(mop, "много")
    assert "Бюджет — число" in harness.last_text(chat)
    assert T.t("common.skip") in captions(harness, mop)
    await harness.send(mop, "-5")
    assert "Бюджет — число" in harness.last_text(chat)
    await harness.send(mop, None)
    assert T.t("newlead.need_text") in harness.last_text(chat)
    assert await state_of(harness, mop) == NewLead.budget.state
    await harness.send(mop, "50 000")

    # notes
    await harness.send(mop, "x" * (MAX_NOTES + 1))
    assert T.t("invalid.text_too_long", limit=MAX_NOTES) in harness.last_text(chat)
    await harness.send(mop, None)
    assert T.t("newlead.need_text") in harness.last_text(chat)
    assert await state_of(harness, mop) == NewLead.notes.state
    await harness.send(mop, "Звонил по объявлению")

    # assignee: typed text re-shows the buttons; a forged non-seller or inactive id is refused at once
    await harness.send(mop, "Продажник Иванов")
    assert T.t("newlead.use_buttons") in harness.last_text(chat)
    assert "Продажник Иванов" in captions(harness, mop)
    for forged in (team.admin, team.finance, team.inactive):
        await harness.click(mop, NewLeadCB(action=NewLeadAction.ASSIGNEE, value=forged.id))
        assert harness.alerts()[-1] == T.t("invalid.assignee_invalid")
    await harness.click(mop, NewLeadCB(action=NewLeadAction.ASSIGNEE, value=987654))
    assert harness.alerts()[-1] == T.t("invalid.assignee_invalid")
    assert await state_of(harness, mop) == NewLead.assignee.state
    await harness.press(mop, "Второй")

    # summary: typed text re-shows the summary and its buttons
    await harness.send(mop, "да")
    assert T.t("newlead.use_buttons") in harness.last_text(chat)
    assert "Иван Петров" in harness.last_text(chat)
    assert T.t("newlead.btn.create") in captions(harness, mop)
    await harness.press(mop, "Создать")

    (lead,) = await all_leads(harness)
    assert (lead.client_name, lead.phone_number, lead.source) == ("Иван Петров", PHONE, "Google Ads")
    assert (lead.budget, lead.notes, lead.assigned_to_id) == (50_000, "Звонил по объявлению", team.seller2.id)


async def test_html_in_user_text_is_shown_escaped(harness: Harness, team: Team) -> None:
    await walk(harness, team.mop, "budget", name="<b>Иван</b> & Co")
    await harness.press(team.mop, T.t("common.skip"))
    await harness.send(team.mop, "<i>VIP</i> <script>")
    await harness.press(team.mop, T.t("common.skip"))
    summary = harness.last_text(team.mop.chat_id)
    assert "&lt;b&gt;Иван&lt;/b&gt; &amp; Co" in summary
    assert "&lt;i&gt;VIP&lt;/i&gt; &lt;script&gt;" in summary
    assert "<b>Иван" not in summary and "<i>VIP" not in summary
    await harness.press(team.mop, "Создать")
    (lead,) = await all_leads(harness)
    assert lead.client_name == "<b>Иван</b> & Co"  # stored as typed, escaped only when shown
    assert "&lt;b&gt;Иван" in harness.last_text(team.mop.chat_id)


# ---- duplicates ----------------------------------------------------------------------------------------


async def test_duplicate_phone_offers_the_existing_card_and_stays(harness: Harness, team: Team) -> None:
    lead_id = await existing_lead(harness, team.rop)
    await walk(harness, team.mop, "phone")
    await harness.send(team.mop, "90 123 45 67")
    text = harness.last_text(team.mop.chat_id)
    assert f"#{lead_id}" in text
    assert T.t("error.duplicate", phone="+998 90 123 45 67", lead_id=lead_id) in text
    open_card = LeadCB(action=LeadAction.OPEN, lead_id=lead_id).pack()
    assert (T.t("newlead.btn.open"), open_card) in harness.last_buttons(team.mop.chat_id)
    assert await state_of(harness, team.mop) == NewLead.phone.state
    # another number goes on, and the name typed before is still there
    await harness.send(team.mop, "+998 91 555 44 33")
    assert await state_of(harness, team.mop) == NewLead.source.state
    summary = await _finish(harness, team.mop)
    assert "Иван Петров" in summary
    assert len(await all_leads(harness)) == 2


async def test_duplicate_phone_without_view_rights_shows_no_card_button(harness: Harness, team: Team) -> None:
    lead_id = await existing_lead(harness, team.rop, assignee=team.seller2)
    await walk(harness, team.mop, "phone")
    # Demoted mid-conversation: a salesperson may not view a lead assigned to someone else.
    async with harness.uow_factory() as uow:
        await uow.users.set_role(team.admin.user, team.mop.id, Role.SELLER)
        await uow.commit()
    await harness.send(team.mop, "998901234567")
    assert f"#{lead_id}" in harness.last_text(team.mop.chat_id)
    data = [d for _, d in harness.last_buttons(team.mop.chat_id)]
    assert not any(d.startswith("ld:") for d in data)
    assert NewLeadCB(action=NewLeadAction.CANCEL).pack() in data
    assert await state_of(harness, team.mop) == NewLead.phone.state
    # and the repository still refuses the (now) salesperson at Create
    await harness.send(team.mop, "+998 91 555 44 33")
    await harness.press(team.mop, "Сайт")
    for _ in range(3):
        await harness.press(team.mop, T.t("common.skip"))
    await harness.press(team.mop, "Создать")
    assert harness.alerts()[-1] == T.t("error.forbidden.create")
    assert len(await all_leads(harness)) == 1
    assert await state_of(harness, team.mop) is None


async def test_duplicate_at_create_is_reported_and_the_summary_stays(harness: Harness, team: Team) -> None:
    await walk(harness, team.mop, "confirm")
    lead_id = await existing_lead(harness, team.rop, phone="90 123 45 67")  # someone was quicker
    await harness.press(team.mop, "Создать")
    text = harness.last_text(team.mop.chat_id)
    assert f"#{lead_id}" in text
    open_card = LeadCB(action=LeadAction.OPEN, lead_id=lead_id).pack()
    assert (T.t("newlead.btn.open"), open_card) in harness.last_buttons(team.mop.chat_id)
    assert [lead.id for lead in await all_leads(harness)] == [lead_id]
    assert await state_of(harness, team.mop) == NewLead.confirm.state
    await harness.click(team.mop, NewLeadCB(action=NewLeadAction.CANCEL))
    assert await state_of(harness, team.mop) is None
    assert len(await all_leads(harness)) == 1


async def test_assignee_deactivated_before_create_asks_again(harness: Harness, team: Team) -> None:
    await walk(harness, team.mop, "confirm")
    async with harness.uow_factory() as uow:
        await uow.users.set_active(team.admin.user, team.seller.id, False)
        await uow.commit()
    await harness.press(team.mop, "Создать")
    assert await all_leads(harness) == []
    assert await state_of(harness, team.mop) == NewLead.assignee.state
    assert T.t("invalid.assignee_invalid") in harness.last_text(team.mop.chat_id)
    assert "Продажник Иванов" not in captions(harness, team.mop)
    await harness.press(team.mop, "Второй")
    await harness.press(team.mop, "Создать")
    (lead,) = await all_leads(harness)
    assert lead.assigned_to_id == team.seller2.id
    assert lead.budget == 50_000  # the rest of the draft survived the detour


# ---- leaving, refusing, stale buttons ------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
async def test_cancel_leaves_any_step_and_creates_nothing(harness: Harness, team: Team, step: str) -> None:
    await walk(harness, team.mop, step)
    await harness.send(team.mop, "/cancel")
    assert harness.last_text(team.mop.chat_id) == T.t("common.cancelled")
    assert await state_of(harness, team.mop) is None
    await harness.click(team.mop, NewLeadCB(action=NewLeadAction.CREATE))
    assert harness.alerts()[-1] == T.t("common.stale_button")
    assert await all_leads(harness) == []


@pytest.mark.parametrize("step", ["name", "source", "confirm"])
async def test_the_cancel_button_leaves_the_conversation(harness: Harness, team: Team, step: str) -> None:
    await walk(harness, team.admin, step)
    await harness.press(team.admin, T.t("common.cancel"))
    assert harness.last_text(team.admin.chat_id) == T.t("common.cancelled")
    assert await state_of(harness, team.admin) is None
    await harness.send(team.admin, "Иван Петров")  # plain text no longer feeds the conversation
    assert await state_of(harness, team.admin) is None
    assert await all_leads(harness) == []


@pytest.mark.parametrize("role", [Role.SELLER, Role.FINANCE])
async def test_roles_that_may_not_create_are_refused(harness: Harness, team: Team, role: Role) -> None:
    member = team.by_role(role)
    await harness.send(member, "/new")
    assert harness.last_text(member.chat_id) == T.t("error.forbidden.create")
    assert await state_of(harness, member) is None
    await harness.click(member, MenuCB(action=MenuAction.NEW))
    assert harness.alerts()[-1] == T.t("error.forbidden.create")
    assert await state_of(harness, member) is None
    await harness.send(member, "Иван Петров")
    assert await all_leads(harness) == []


async def test_a_stale_create_button_without_a_conversation_creates_nothing(harness: Harness, team: Team) -> None:
    await harness.click(team.admin, NewLeadCB(action=NewLeadAction.CREATE))
    assert harness.alerts() == [T.t("common.stale_button")]
    await harness.click(team.admin, NewLeadCB(action=NewLeadAction.ASSIGNEE, value=team.seller.id))
    assert harness.alerts()[-1] == T.t("common.stale_button")
    assert await all_leads(harness) == []
    assert await state_of(harness, team.admin) is None


async def test_a_button_of_another_step_is_refused(harness: Harness, team: Team) -> None:
    await walk(harness, team.mop, "notes")
    await harness.click(team.mop, NewLeadCB(action=NewLeadAction.CREATE))
    await harness.click(team.mop, NewLeadCB(action=NewLeadAction.SKIP_BUDGET))
    assert harness.alerts()[-2:] == [T.t("newlead.other_step")] * 2
    assert await state_of(harness, team.mop) == NewLead.notes.state
    assert await all_leads(harness) == []


async def test_new_in_a_group_points_to_the_private_chat(harness: Harness, team: Team) -> None:
    await harness.send(team.mop, "/new", chat_id=-100500)
    assert harness.last_text(-100500) == T.t("newlead.private_only")
    context = harness.dp.fsm.get_context(bot=harness.bot, chat_id=-100500, user_id=team.mop.tg.id)
    assert await context.get_state() is None


# ---- limits --------------------------------------------------------------------------------------------


async def test_every_callback_data_fits_in_64_bytes(harness: Harness, team: Team) -> None:
    await walk(harness, team.admin, "confirm")
    await harness.press(team.admin, "Создать")
    markups = [
        r.reply_markup
        for r in harness.session.requests
        if isinstance(r, SendMessage | EditMessageText) and isinstance(r.reply_markup, InlineKeyboardMarkup)
    ]
    data = [d for markup in markups for _, d in buttons(markup)]
    assert any(d.startswith("nl:") for d in data) and any(d.startswith("ld:") for d in data)
    worst = [NewLeadCB(action=a, value=2**63 - 1).pack() for a in NewLeadAction]
    worst.append(LeadCB(action=LeadAction.OPEN, lead_id=2**63 - 1).pack())
    for packed in data + worst:
        assert len(packed.encode()) <= CALLBACK_DATA_LIMIT, packed
    answers = [a.text for a in harness.session.of(AnswerCallbackQuery) if a.text]
    assert all(len(text) <= 200 for text in answers)
