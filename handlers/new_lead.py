"""/new: a lead created step by step (name → phone → source → budget → notes → assignee → summary).

The draft lives in FSM data as a pydantic model; nothing touches the database before "Create", which
goes through ``uow.leads.create`` like the HTTP API does. Typed answers get a new message; a pressed
button turns its own message into the next step, so the chat stays short.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from pydantic import BaseModel, ConfigDict

from bot.config import Settings
from bot.middlewares import WRITES
from bot.presentation.views import cut, describe_error, esc, format_money, format_phone_html, user_label
from bot.texts import Texts
from db import permissions
from db.errors import DuplicateLead, Forbidden, InvalidInput
from db.models import User
from db.permissions import Actor
from db.repositories.leads import LeadDraft
from db.uow import UnitOfWork
from db.validation import MAX_NOTES, clean_name, clean_text, example_phone, normalize_phone, parse_budget
from handlers.filters import HasContact, HasText, conversation_router
from keyboards import new_lead as kb
from keyboards.callbacks import MenuAction, MenuCB, NewLeadAction, NewLeadCB


class NewLead(StatesGroup):
    name = State()
    phone = State()
    source = State()
    budget = State()
    notes = State()
    assignee = State()
    confirm = State()


class NewLeadDraft(BaseModel):
    """What has been collected so far; stored as JSON in the FSM data under ``draft``."""

    model_config = ConfigDict(extra="forbid")

    client_name: str = ""
    phone_number: str = ""
    source: str = ""
    budget: float | None = None
    notes: str | None = None
    assigned_to: int | None = None


async def _load(state: FSMContext) -> NewLeadDraft:
    data = await state.get_data()
    return NewLeadDraft.model_validate(data.get("draft") or {})


# ---- rendering -----------------------------------------------------------------------------------------


def _fields(
    texts: Texts,
    settings: Settings,
    *,
    name: str,
    phone: str,
    source: str,
    budget: float | None,
    notes: str | None,
    assignee: User | None,
) -> str:
    none = texts.t("common.none")
    lines = [
        texts.t("newlead.field.name", value=esc(name)),
        texts.t("newlead.field.phone", value=format_phone_html(phone)),
        texts.t("newlead.field.source", value=esc(source)),
        texts.t("newlead.field.budget", value=esc(format_money(budget, settings.crm.currency))),
        texts.t("newlead.field.notes", value=esc(notes) if notes else none),
        texts.t("newlead.field.assignee", value=user_label(assignee, texts)),
    ]
    return "\n".join(lines)


async def _prompt(
    step: State, draft: NewLeadDraft, texts: Texts, settings: Settings, uow: UnitOfWork, *, page: int = 0
) -> tuple[str, InlineKeyboardMarkup]:
    """The question of ``step`` and its keyboard; ``page``: which page of the salespeople (from 0, clamped)."""
    if step == NewLead.name:
        return texts.t("newlead.ask_name"), kb.cancel_only(texts)
    if step == NewLead.phone:
        example = esc(example_phone(settings.crm.phone_region))
        return texts.t("newlead.ask_phone", example=example), kb.cancel_only(texts)
    if step == NewLead.source:
        return texts.t("newlead.ask_source"), kb.sources(settings.crm.sources, texts)
    if step == NewLead.budget:
        text = texts.t("newlead.ask_budget", currency=esc(settings.crm.currency))
        return text, kb.skip(NewLeadAction.SKIP_BUDGET, texts)
    if step == NewLead.notes:
        return texts.t("newlead.ask_notes", limit=MAX_NOTES), kb.skip(NewLeadAction.SKIP_NOTES, texts)
    if step == NewLead.assignee:
        sellers = await uow.users.active_sellers()
        text = texts.t("newlead.ask_assignee")
        if not sellers:
            text += "\n" + texts.t("newlead.no_sellers")
        return text, kb.assignees(sellers, texts, page)
    assignee = await uow.users.by_id(draft.assigned_to) if draft.assigned_to is not None else None
    fields = _fields(
        texts,
        settings,
        name=draft.client_name,
        phone=draft.phone_number,
        source=draft.source,
        budget=draft.budget,
        notes=draft.notes,
        assignee=assignee,
    )
    return f"{texts.t('newlead.summary')}\n\n{fields}", kb.confirm(texts)


async def _show(
    event: Message | CallbackQuery, text: str, markup: InlineKeyboardMarkup | None, *, edit: bool = True
) -> None:
    """A typed answer gets a new message; a pressed button edits its own message (or sends, ``edit=False``)."""
    text = cut(text)
    if isinstance(event, Message):
        await event.answer(text, reply_markup=markup)
        return
    if edit and isinstance(event.message, Message):
        await event.message.edit_text(text, reply_markup=markup)
    else:
        assert event.bot is not None
        chat_id = event.message.chat.id if event.message is not None else event.from_user.id
        await event.bot.send_message(chat_id, text, reply_markup=markup)
    await event.answer()


async def _go(
    event: Message | CallbackQuery,
    state: FSMContext,
    draft: NewLeadDraft,
    step: State,
    texts: Texts,
    settings: Settings,
    uow: UnitOfWork,
    *,
    note: str | None = None,
    edit: bool = True,
    page: int = 0,
) -> None:
    """Remember where we are, then ask the question of ``step`` (after ``note``, e.g. what was wrong).

    The step is saved before the question is shown: whatever the person answers next is read against
    the question they saw, and with several instances an update whose question went out counts as
    handled (``bot.once``) with its step already in place.
    """
    text, markup = await _prompt(step, draft, texts, settings, uow, page=page)
    if note:
        text = f"{note}\n\n{text}"
    await state.set_state(step)
    await state.update_data(draft=draft.model_dump(mode="json"))
    await _show(event, text, markup, edit=edit)


# ---- start ---------------------------------------------------------------------------------------------


async def _start(
    event: Message | CallbackQuery, actor: Actor, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    if not permissions.can_create(actor):
        raise Forbidden("create")
    chat = event.chat if isinstance(event, Message) else (event.message.chat if event.message else None)
    if chat is not None and chat.type != ChatType.PRIVATE:
        # In groups the bot (privacy mode) never sees the plain-text answers the conversation needs.
        await _show(event, texts.t("newlead.private_only"), None, edit=False)
        return
    await state.clear()
    await _go(event, state, NewLeadDraft(), NewLead.name, texts, settings, uow, edit=False)


async def cmd_new(
    message: Message, actor: Actor, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    await _start(message, actor, state, texts, settings, uow)


async def menu_new(
    query: CallbackQuery, actor: Actor, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    await _start(query, actor, state, texts, settings, uow)


# ---- name ----------------------------------------------------------------------------------------------


async def name_entered(message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork) -> None:
    draft = await _load(state)
    try:
        draft.client_name = clean_name(message.text)
    except InvalidInput as error:
        await _go(message, state, draft, NewLead.name, texts, settings, uow, note=describe_error(texts, error))
        return
    await _go(message, state, draft, NewLead.phone, texts, settings, uow)


async def name_invalid(message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.name, texts, settings, uow, note=texts.t("newlead.need_text"))


# ---- phone ---------------------------------------------------------------------------------------------


async def phone_entered(
    message: Message, actor: Actor, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    raw = message.contact.phone_number if message.contact is not None else (message.text or "")
    try:
        phone = normalize_phone(raw, settings.crm.phone_region)
    except InvalidInput as error:
        await _go(message, state, draft, NewLead.phone, texts, settings, uow, note=describe_error(texts, error))
        return
    existing = await uow.leads.find_live_by_phone(phone)
    if existing is not None:
        # Stay at this step: the user may type another number, open the existing lead or cancel.
        question, _ = await _prompt(NewLead.phone, draft, texts, settings, uow)
        note = describe_error(texts, DuplicateLead(phone, existing.id))
        viewable = existing.id if permissions.can_view(actor, existing) else None
        await _show(message, f"{note}\n\n{question}", kb.open_card(viewable, texts, cancel=True))
        return
    draft.phone_number = phone
    await _go(message, state, draft, NewLead.source, texts, settings, uow)


async def phone_invalid(message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.phone, texts, settings, uow, note=texts.t("newlead.need_phone"))


# ---- source --------------------------------------------------------------------------------------------


def _unknown_source(settings: Settings) -> InvalidInput:
    return InvalidInput("source", "source_unknown", "unknown source", allowed=", ".join(settings.crm.sources))


async def source_chosen(
    query: CallbackQuery,
    callback_data: NewLeadCB,
    state: FSMContext,
    texts: Texts,
    settings: Settings,
    uow: UnitOfWork,
) -> None:
    sources = settings.crm.sources
    if not 0 <= callback_data.value < len(sources):
        raise _unknown_source(settings)
    draft = await _load(state)
    draft.source = sources[callback_data.value]
    await _go(query, state, draft, NewLead.budget, texts, settings, uow)


async def source_typed(message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork) -> None:
    draft = await _load(state)
    typed = " ".join((message.text or "").split()).casefold()
    match = next((s for s in settings.crm.sources if s.casefold() == typed), None)
    if match is None:
        note = describe_error(texts, _unknown_source(settings))
        await _go(message, state, draft, NewLead.source, texts, settings, uow, note=note)
        return
    draft.source = match
    await _go(message, state, draft, NewLead.budget, texts, settings, uow)


async def source_invalid(
    message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.source, texts, settings, uow, note=texts.t("newlead.use_buttons"))


# ---- budget --------------------------------------------------------------------------------------------


async def budget_entered(
    message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    try:
        draft.budget = parse_budget(message.text or "")
    except InvalidInput as error:
        await _go(message, state, draft, NewLead.budget, texts, settings, uow, note=describe_error(texts, error))
        return
    await _go(message, state, draft, NewLead.notes, texts, settings, uow)


async def budget_skipped(
    query: CallbackQuery, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    draft.budget = None
    await _go(query, state, draft, NewLead.notes, texts, settings, uow)


async def budget_invalid(
    message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.budget, texts, settings, uow, note=texts.t("newlead.need_text"))


# ---- notes ---------------------------------------------------------------------------------------------


async def notes_entered(message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork) -> None:
    draft = await _load(state)
    try:
        draft.notes = clean_text(message.text, "notes", MAX_NOTES)
    except InvalidInput as error:
        await _go(message, state, draft, NewLead.notes, texts, settings, uow, note=describe_error(texts, error))
        return
    await _go(message, state, draft, NewLead.assignee, texts, settings, uow)


async def notes_skipped(
    query: CallbackQuery, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    draft.notes = None
    await _go(query, state, draft, NewLead.assignee, texts, settings, uow)


async def notes_invalid(message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.notes, texts, settings, uow, note=texts.t("newlead.need_text"))


# ---- assignee ------------------------------------------------------------------------------------------


async def assignee_chosen(
    query: CallbackQuery,
    callback_data: NewLeadCB,
    state: FSMContext,
    texts: Texts,
    settings: Settings,
    uow: UnitOfWork,
) -> None:
    # The repository checks again at Create; checking here tells the user now, not three steps later.
    user = await uow.leads.assignee(callback_data.value)
    draft = await _load(state)
    draft.assigned_to = user.id
    await _go(query, state, draft, NewLead.confirm, texts, settings, uow)


async def assignee_page(
    query: CallbackQuery,
    callback_data: NewLeadCB,
    state: FSMContext,
    texts: Texts,
    settings: Settings,
    uow: UnitOfWork,
) -> None:
    """« / » under the salespeople: the same step with another page, in place."""
    draft = await _load(state)
    await _go(query, state, draft, NewLead.assignee, texts, settings, uow, page=callback_data.value)


async def assignee_skipped(
    query: CallbackQuery, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    draft.assigned_to = None
    await _go(query, state, draft, NewLead.confirm, texts, settings, uow)


async def assignee_invalid(
    message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.assignee, texts, settings, uow, note=texts.t("newlead.use_buttons"))


# ---- summary -------------------------------------------------------------------------------------------


async def create(
    query: CallbackQuery, actor: Actor, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    try:
        lead = await uow.leads.create(
            actor,
            LeadDraft(
                client_name=draft.client_name,
                phone_number=draft.phone_number,
                source=draft.source,
                budget=draft.budget,
                notes=draft.notes,
                assigned_to=draft.assigned_to,
            ),
        )
    except DuplicateLead as error:
        # Someone created it meanwhile. The summary (with Create/Cancel) stays; this says why it failed.
        existing = await uow.leads.find_live_by_phone(error.phone_number)
        viewable = existing.id if existing is not None and permissions.can_view(actor, existing) else None
        await _show(query, describe_error(texts, error), kb.open_card(viewable, texts, cancel=True), edit=False)
        return
    except InvalidInput as error:
        if error.field != "assigned_to":
            raise
        # The chosen salesperson was deactivated meanwhile: choose again.
        note = describe_error(texts, error)
        await _go(query, state, draft, NewLead.assignee, texts, settings, uow, note=note)
        return
    except Forbidden:
        # The role changed mid-conversation; there is nothing left to continue.
        await state.clear()
        raise
    fields = _fields(
        texts,
        settings,
        name=lead.client_name,
        phone=lead.phone_number,
        source=lead.source,
        budget=lead.budget,
        notes=lead.notes,
        assignee=lead.assigned_to,
    )
    await _show(query, f"{texts.t('newlead.created', lead_id=lead.id)}\n\n{fields}", kb.open_card(lead.id, texts))
    await state.clear()


async def confirm_invalid(
    message: Message, state: FSMContext, texts: Texts, settings: Settings, uow: UnitOfWork
) -> None:
    draft = await _load(state)
    await _go(message, state, draft, NewLead.confirm, texts, settings, uow, note=texts.t("newlead.use_buttons"))


# ---- leaving and stale buttons -------------------------------------------------------------------------


async def cancel(query: CallbackQuery, state: FSMContext, texts: Texts) -> None:
    await _show(query, texts.t("common.cancelled"), None)
    await state.clear()


async def stale_button(query: CallbackQuery, raw_state: str | None, texts: Texts) -> None:
    """A button of this conversation that does not fit where the user is (or no conversation at all)."""
    key = "newlead.other_step" if raw_state in NewLead else "common.stale_button"
    await query.answer(texts.t(key), show_alert=True)


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_new, Command("new"))
    router.callback_query.register(menu_new, MenuCB.filter(F.action == MenuAction.NEW))
    # A router's own handlers are tried before its sub-routers', so the stale-button catch-all gets a
    # sub-router of its own, after the steps: a /new button pressed after the conversation ended.
    stale = Router(name=f"{__name__}.stale")
    stale.callback_query.register(stale_button, NewLeadCB.filter())
    router.include_routers(_steps_router(), stale)
    return router


def _steps_router() -> Router:
    router = conversation_router(f"{__name__}.steps", NewLead)
    router.message.register(name_entered, StateFilter(NewLead.name), HasText())
    router.message.register(name_invalid, StateFilter(NewLead.name))

    router.message.register(phone_entered, StateFilter(NewLead.phone), HasText())
    router.message.register(phone_entered, StateFilter(NewLead.phone), HasContact())
    router.message.register(phone_invalid, StateFilter(NewLead.phone))

    router.callback_query.register(
        source_chosen, StateFilter(NewLead.source), NewLeadCB.filter(F.action == NewLeadAction.SOURCE)
    )
    router.message.register(source_typed, StateFilter(NewLead.source), HasText())
    router.message.register(source_invalid, StateFilter(NewLead.source))

    router.message.register(budget_entered, StateFilter(NewLead.budget), HasText())
    router.callback_query.register(
        budget_skipped, StateFilter(NewLead.budget), NewLeadCB.filter(F.action == NewLeadAction.SKIP_BUDGET)
    )
    router.message.register(budget_invalid, StateFilter(NewLead.budget))

    router.message.register(notes_entered, StateFilter(NewLead.notes), HasText())
    router.callback_query.register(
        notes_skipped, StateFilter(NewLead.notes), NewLeadCB.filter(F.action == NewLeadAction.SKIP_NOTES)
    )
    router.message.register(notes_invalid, StateFilter(NewLead.notes))

    router.callback_query.register(
        assignee_chosen, StateFilter(NewLead.assignee), NewLeadCB.filter(F.action == NewLeadAction.ASSIGNEE)
    )
    router.callback_query.register(
        assignee_page, StateFilter(NewLead.assignee), NewLeadCB.filter(F.action == NewLeadAction.ASSIGNEE_PAGE)
    )
    router.callback_query.register(
        assignee_skipped, StateFilter(NewLead.assignee), NewLeadCB.filter(F.action == NewLeadAction.SKIP_ASSIGNEE)
    )
    router.message.register(assignee_invalid, StateFilter(NewLead.assignee))

    router.callback_query.register(
        create, StateFilter(NewLead.confirm), NewLeadCB.filter(F.action == NewLeadAction.CREATE), flags=WRITES
    )
    router.message.register(confirm_invalid, StateFilter(NewLead.confirm))

    router.callback_query.register(cancel, NewLeadCB.filter(F.action == NewLeadAction.CANCEL))
    return router
