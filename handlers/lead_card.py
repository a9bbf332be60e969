"""The lead card (/lead, the "open" button) and everything done from it; /assign.

Actions that come from a button of the card redraw that message; actions finished by typing (a
refusal reason, a comment, a new field value) send the card anew. Either way the card starts with a
line saying what happened. Forged and stale buttons end in a repository error, which the errors
router answers after the update's transaction was rolled back.
"""

from __future__ import annotations

import html
import re
from typing import TypeVar

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from pydantic import BaseModel, ValidationError

from bot.config import Settings
from bot.middlewares import WRITES
from bot.presentation.cards import PAGE_ROWS, format_date, render_card, render_comments_page, render_history_page
from bot.presentation.views import CALLBACK_ANSWER_LIMIT, describe_error, esc, format_money, status_label, user_label
from bot.texts import Texts
from db import permissions
from db.enums import LeadField, LeadStatus
from db.errors import DomainError, Forbidden, InvalidInput, InvalidTransition, NotFound
from db.ids import parse_row_id, parse_telegram_id
from db.models import Lead, User
from db.permissions import Actor
from db.repositories import LeadChanges
from db.uow import UnitOfWork
from db.validation import MAX_COMMENT, MAX_NOTES, MAX_REASON, example_phone, parse_budget, parse_date
from handlers.filters import HasText, conversation_router
from keyboards.callbacks import (
    AssignCB,
    AssignPageCB,
    EditField,
    LeadAction,
    LeadCB,
    LeadEditCB,
    LeadMoreCB,
    LeadSourceCB,
    LeadStatusCB,
    MoreKind,
)
from keyboards.lead_card import (
    CLEARABLE,
    EDIT_FIELDS,
    assign_keyboard,
    card_keyboard,
    clear_keyboard,
    delete_keyboard,
    edit_keyboard,
    more_keyboard,
    source_keyboard,
    status_keyboard,
)

M = TypeVar("M", bound=BaseModel)


class RefusalForm(StatesGroup):
    reason = State()


class CommentForm(StatesGroup):
    text = State()


class EditForm(StatesGroup):
    value = State()


class LeadRef(BaseModel):
    """The draft of the refusal and comment conversations: which lead they are about."""

    lead_id: int


class EditDraft(BaseModel):
    lead_id: int
    field: EditField


# ---- rendering and delivery ---------------------------------------------------------------------------


async def _card(
    uow: UnitOfWork, actor: Actor, lead_id: int, texts: Texts, settings: Settings, notice: str | None = None
) -> tuple[str, InlineKeyboardMarkup | None]:
    detail = await uow.leads.card(actor, lead_id)
    card = render_card(detail, texts, settings.crm, notice=notice)
    moves = uow.leads.allowed_moves(actor, detail.lead)
    return card.text, card_keyboard(actor, detail.lead, moves, card, texts)


async def _redraw(query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Replace the message the button is on; when Telegram refuses (too old, deleted), send anew.

    A refused edit must not fail the update: the action itself already happened and is committed.
    """
    message = query.message
    if message is None:
        await bot.send_message(query.from_user.id, text, reply_markup=markup)
        return
    try:
        await bot.edit_message_text(text, chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in str(exc):
            await bot.send_message(message.chat.id, text, reply_markup=markup)


async def _send(query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await bot.send_message(chat_id, text, reply_markup=markup)


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))[:CALLBACK_ANSWER_LIMIT]


async def _done(
    query: CallbackQuery,
    bot: Bot,
    uow: UnitOfWork,
    actor: Actor,
    lead_id: int,
    texts: Texts,
    settings: Settings,
    notice: str,
) -> None:
    """After an action from a button: the updated card in place, and the notice as a toast."""
    text, markup = await _card(uow, actor, lead_id, texts, settings, notice)
    await _redraw(query, bot, text, markup)
    await query.answer(_plain(notice))


async def _draft(state: FSMContext, model: type[M]) -> M | None:
    try:
        return model.model_validate((await state.get_data()).get("draft"))
    except ValidationError:
        return None


async def _start(state: FSMContext, target: State, draft: BaseModel) -> None:
    """Enter a conversation, replacing whatever conversation (and draft) was going on."""
    await state.set_state(target)
    await state.set_data({"draft": draft.model_dump(mode="json")})


async def _lost_draft(message: Message, state: FSMContext, texts: Texts) -> None:
    await state.clear()
    await message.answer(texts.t("common.stale_button"))


def _parse_id(raw: str) -> int | None:
    """``12`` or ``#12``: a row id, or None for anything else (answered with the usage or "not found")."""
    return parse_row_id(raw.strip().removeprefix("#"))


# ---- opening the card -----------------------------------------------------------------------------------


async def cmd_lead(
    message: Message, command: CommandObject, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings
) -> None:
    lead_id = _parse_id(command.args or "")
    if lead_id is None:
        await message.answer(texts.t("card.usage"))
        return
    text, markup = await _card(uow, actor, lead_id, texts, settings)
    await message.answer(text, reply_markup=markup)


async def on_open(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    """Lists, search results and notifications send this: the card as a new message."""
    text, markup = await _card(uow, actor, callback_data.lead_id, texts, settings)
    await _send(query, bot, text, markup)
    await query.answer()


async def on_card(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    """« Back from a sub-menu: the card again, in place."""
    text, markup = await _card(uow, actor, callback_data.lead_id, texts, settings)
    await _redraw(query, bot, text, markup)
    await query.answer()


# ---- status ---------------------------------------------------------------------------------------------


async def _moves_or_raise(uow: UnitOfWork, actor: Actor, lead_id: int) -> tuple[LeadStatus, list[LeadStatus]]:
    lead = await uow.leads.get(actor, lead_id)
    if not permissions.can_update(actor, lead):
        raise Forbidden("update")
    current = LeadStatus(lead.status)
    return current, uow.leads.allowed_moves(actor, lead)


async def on_status_menu(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    current, moves = await _moves_or_raise(uow, actor, callback_data.lead_id)
    if not moves:
        raise InvalidTransition(current, current, [])
    text, _ = await _card(uow, actor, callback_data.lead_id, texts, settings, texts.t("card.choose.status"))
    await _redraw(query, bot, text, status_keyboard(callback_data.lead_id, moves, texts))
    await query.answer()


async def on_status(
    query: CallbackQuery,
    callback_data: LeadStatusCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    state: FSMContext,
    bot: Bot,
) -> None:
    lead_id, target = callback_data.lead_id, callback_data.code.status
    current, moves = await _moves_or_raise(uow, actor, lead_id)
    if target == LeadStatus.REFUSED:
        # Checked before asking, so nobody types a reason for a move that cannot happen.
        if target not in moves:
            raise InvalidTransition(current, target, moves)
        lead = await uow.leads.get(actor, lead_id)
        await _start(state, RefusalForm.reason, LeadRef(lead_id=lead_id))
        await _send(
            query, bot, texts.t("card.ask.reason", lead_id=lead_id, name=esc(lead.client_name), limit=MAX_REASON)
        )
        await query.answer()
        return
    await uow.leads.change_status(actor, lead_id, target)
    notice = texts.t("card.done.status", old=status_label(texts, current), new=status_label(texts, target))
    await _done(query, bot, uow, actor, lead_id, texts, settings, notice)


async def on_refusal_reason(
    message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, state: FSMContext
) -> None:
    draft = await _draft(state, LeadRef)
    if draft is None:
        await _lost_draft(message, state, texts)
        return
    try:
        await uow.leads.change_status(actor, draft.lead_id, LeadStatus.REFUSED, reason=message.text)
    except InvalidInput as exc:
        # Raised before anything changed: ask again, keeping the conversation.
        await message.answer(f"{describe_error(texts, exc)}\n{texts.t('card.try_again')}")
        return
    except DomainError:
        await state.clear()  # the lead moved on (deleted, refused meanwhile, reassigned): nothing to ask
        raise
    await state.clear()
    notice = texts.t("card.done.refused", new=status_label(texts, LeadStatus.REFUSED))
    text, markup = await _card(uow, actor, draft.lead_id, texts, settings, notice)
    await message.answer(text, reply_markup=markup)


async def on_text_expected(message: Message, texts: Texts) -> None:
    """Any state of this module given a photo, sticker or the like."""
    await message.answer(texts.t("card.need_text"))


# ---- comments -------------------------------------------------------------------------------------------


async def on_comment_start(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    state: FSMContext,
    bot: Bot,
) -> None:
    lead = await uow.leads.get(actor, callback_data.lead_id)
    if not permissions.can_comment(actor, lead):
        raise Forbidden("comment")
    await _start(state, CommentForm.text, LeadRef(lead_id=lead.id))
    await _send(query, bot, texts.t("card.ask.comment", lead_id=lead.id, name=esc(lead.client_name), limit=MAX_COMMENT))
    await query.answer()


async def on_comment_text(
    message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, state: FSMContext
) -> None:
    draft = await _draft(state, LeadRef)
    if draft is None:
        await _lost_draft(message, state, texts)
        return
    try:
        await uow.leads.add_comment(actor, draft.lead_id, message.text or "")
    except InvalidInput as exc:
        await message.answer(f"{describe_error(texts, exc)}\n{texts.t('card.try_again')}")
        return
    except DomainError:
        await state.clear()
        raise
    await state.clear()
    text, markup = await _card(uow, actor, draft.lead_id, texts, settings, texts.t("card.done.comment"))
    await message.answer(text, reply_markup=markup)


# ---- assigning ------------------------------------------------------------------------------------------


async def on_assign_menu(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    await _assign_menu(query, actor, uow, texts, settings, bot, callback_data.lead_id)


async def on_assign_page(
    query: CallbackQuery,
    callback_data: AssignPageCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    """« / » of the assign menu: the same message with another page of salespeople."""
    await _assign_menu(
        query, actor, uow, texts, settings, bot, callback_data.lead_id, page=callback_data.page, back=callback_data.back
    )


async def _assign_menu(
    query: CallbackQuery,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
    lead_id: int,
    *,
    page: int = 0,
    back: bool = True,
) -> None:
    """Redraw the button's message as page ``page`` (clamped) of the assign menu: under the card
    (``back``) or under /assign's question."""
    if not permissions.can_assign(actor):
        raise Forbidden("assign")
    lead = await uow.leads.get(actor, lead_id)
    sellers = await uow.users.active_sellers()
    if not sellers:
        await query.answer(texts.t("card.assign.no_sellers"), show_alert=True)
        return
    if back:
        text, _ = await _card(uow, actor, lead.id, texts, settings, texts.t("card.choose.assignee"))
    else:
        text = _assign_question(lead, texts)
    markup = assign_keyboard(lead.id, sellers, lead.assigned_to_id, texts, back=back, page=page)
    await _redraw(query, bot, text, markup)
    await query.answer()


def _assign_question(lead: Lead, texts: Texts) -> str:
    """The text of /assign's own salesperson picker."""
    return texts.t("card.assign.choose", lead_id=lead.id, name=esc(lead.client_name))


async def on_assign(
    query: CallbackQuery,
    callback_data: AssignCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    lead = await uow.leads.assign(actor, callback_data.lead_id, callback_data.user_id)
    notice = texts.t("card.done.assigned", name=user_label(lead.assigned_to, texts))
    await _done(query, bot, uow, actor, lead.id, texts, settings, notice)


async def _resolve_user(uow: UnitOfWork, actor: Actor, raw: str) -> User | None:
    """``@username``, ``#<user id>`` or a Telegram id."""
    if raw.startswith("@") and len(raw) > 1:
        name = raw[1:].casefold()
        return next((u for u in await uow.users.team(actor) if (u.username or "").casefold() == name), None)
    if raw.startswith("#"):
        user_id = _parse_id(raw)
        return await uow.users.by_id(user_id) if user_id is not None else None
    telegram_id = parse_telegram_id(raw)
    return await uow.users.by_telegram_id(telegram_id) if telegram_id is not None else None


async def cmd_assign(
    message: Message, command: CommandObject, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings
) -> None:
    if not permissions.can_assign(actor):
        raise Forbidden("assign")
    args = (command.args or "").split()
    lead_id = _parse_id(args[0]) if args else None
    if lead_id is None or len(args) > 2:
        await message.answer(texts.t("card.assign.usage"))
        return
    if len(args) == 1:
        lead = await uow.leads.get(actor, lead_id)
        sellers = await uow.users.active_sellers()
        if not sellers:
            await message.answer(texts.t("card.assign.no_sellers"))
            return
        await message.answer(
            _assign_question(lead, texts),
            reply_markup=assign_keyboard(lead.id, sellers, lead.assigned_to_id, texts, back=False),
        )
        return
    user = await _resolve_user(uow, actor, args[1])
    if user is None:
        await message.answer(texts.t("card.assign.unknown_user", who=esc(args[1])))
        return
    lead = await uow.leads.assign(actor, lead_id, user.id)
    notice = texts.t("card.done.assigned", name=user_label(lead.assigned_to, texts))
    text, markup = await _card(uow, actor, lead.id, texts, settings, notice)
    await message.answer(text, reply_markup=markup)


# ---- editing --------------------------------------------------------------------------------------------


async def _editable(uow: UnitOfWork, actor: Actor, lead_id: int) -> Lead:
    lead = await uow.leads.get(actor, lead_id)
    if not permissions.can_update(actor, lead):
        raise Forbidden("update")
    return lead


async def on_edit_menu(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    lead = await _editable(uow, actor, callback_data.lead_id)
    text, _ = await _card(uow, actor, lead.id, texts, settings, texts.t("card.choose.field"))
    await _redraw(query, bot, text, edit_keyboard(lead.id, texts))
    await query.answer()


def _current_value(field: LeadField, lead: Lead, texts: Texts, settings: Settings) -> str:
    value = getattr(lead, field.value)
    if value is None or value == "":
        return texts.t("common.none")
    if field is LeadField.BUDGET:
        return format_money(value, settings.crm.currency)
    if field is LeadField.CLOSING_DATE:
        return format_date(value)
    text = str(value)
    return esc(text if len(text) <= 300 else text[:299] + "…")


async def on_edit_field(
    query: CallbackQuery,
    callback_data: LeadEditCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    state: FSMContext,
    bot: Bot,
) -> None:
    lead = await _editable(uow, actor, callback_data.lead_id)
    field = callback_data.field
    if field is EditField.SOURCE:
        text, _ = await _card(uow, actor, lead.id, texts, settings, texts.t("card.choose.source"))
        await _redraw(query, bot, text, source_keyboard(lead.id, settings.crm.sources, lead.source, texts))
        await query.answer()
        return
    name = EDIT_FIELDS[field]
    await _start(state, EditForm.value, EditDraft(lead_id=lead.id, field=field))
    prompt = texts.t(
        f"card.ask.{name.value}",
        lead_id=lead.id,
        current=_current_value(name, lead, texts, settings),
        example=esc(example_phone(settings.crm.phone_region)),
        limit=MAX_NOTES,
    )
    await _send(query, bot, prompt, clear_keyboard(lead.id, field, texts))
    await query.answer()


async def _apply_edit(uow: UnitOfWork, actor: Actor, lead_id: int, field: LeadField, value: object) -> bool:
    """Change one field; True when the value actually changed."""
    lead = await uow.leads.get(actor, lead_id)
    before = getattr(lead, field.value)
    lead = await uow.leads.update(actor, lead_id, LeadChanges(**{field.value: value}))
    return bool(getattr(lead, field.value) != before)


async def on_edit_clear(
    query: CallbackQuery,
    callback_data: LeadEditCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    state: FSMContext,
    bot: Bot,
) -> None:
    if callback_data.field not in CLEARABLE:
        await query.answer(texts.t("common.stale_button"), show_alert=True)
        return
    name = EDIT_FIELDS[callback_data.field]
    changed = await _apply_edit(uow, actor, callback_data.lead_id, name, None)
    draft = await _draft(state, EditDraft) if await state.get_state() == EditForm.value.state else None
    if draft is not None and draft.lead_id == callback_data.lead_id:
        await state.clear()
    field_label = texts.t(f"card.field.{name.value}")
    notice = texts.t("card.done.cleared", field=field_label) if changed else texts.t("card.done.unchanged")
    await _done(query, bot, uow, actor, callback_data.lead_id, texts, settings, notice)


async def on_source(
    query: CallbackQuery,
    callback_data: LeadSourceCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    sources = settings.crm.sources
    if not 0 <= callback_data.index < len(sources):
        await query.answer(texts.t("common.stale_button"), show_alert=True)
        return
    changed = await _apply_edit(uow, actor, callback_data.lead_id, LeadField.SOURCE, sources[callback_data.index])
    field_label = texts.t("card.field.source")
    notice = texts.t("card.done.updated", field=field_label) if changed else texts.t("card.done.unchanged")
    await _done(query, bot, uow, actor, callback_data.lead_id, texts, settings, notice)


async def on_edit_value(
    message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, state: FSMContext
) -> None:
    draft = await _draft(state, EditDraft)
    if draft is None:
        await _lost_draft(message, state, texts)
        return
    name = EDIT_FIELDS[draft.field]
    raw = message.text or ""
    try:
        value: object = raw
        if name is LeadField.BUDGET:
            value = parse_budget(raw)
        elif name is LeadField.CLOSING_DATE:
            value = parse_date(raw)
        changed = await _apply_edit(uow, actor, draft.lead_id, name, value)
    except InvalidInput as exc:
        # Parsing and the repository's checks fail before anything changed: ask again.
        await message.answer(f"{describe_error(texts, exc)}\n{texts.t('card.try_again')}")
        return
    except (Forbidden, NotFound):
        await state.clear()
        raise
    await state.clear()
    field_label = texts.t(f"card.field.{name.value}")
    notice = texts.t("card.done.updated", field=field_label) if changed else texts.t("card.done.unchanged")
    text, markup = await _card(uow, actor, draft.lead_id, texts, settings, notice)
    await message.answer(text, reply_markup=markup)


# ---- deleting -------------------------------------------------------------------------------------------


async def on_delete_ask(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    if not permissions.can_delete(actor):
        raise Forbidden("delete")
    lead_id = callback_data.lead_id
    text, _ = await _card(uow, actor, lead_id, texts, settings, texts.t("card.confirm.delete", lead_id=lead_id))
    await _redraw(query, bot, text, delete_keyboard(lead_id, texts))
    await query.answer()


async def on_delete_confirm(
    query: CallbackQuery, callback_data: LeadCB, actor: Actor, uow: UnitOfWork, texts: Texts, bot: Bot
) -> None:
    lead = await uow.leads.delete(actor, callback_data.lead_id)
    notice = texts.t("card.done.deleted", lead_id=lead.id)
    await _redraw(query, bot, notice, None)
    await query.answer(_plain(notice))


# ---- "more": comments and history, page by page ---------------------------------------------------------


async def _more_page(
    uow: UnitOfWork, actor: Actor, kind: MoreKind, lead_id: int, before_id: int, texts: Texts, settings: Settings
) -> tuple[str, InlineKeyboardMarkup]:
    before = before_id or None
    if kind is MoreKind.COMMENTS:
        comments = await uow.leads.comments(actor, lead_id, limit=PAGE_ROWS + 1, before_id=before)
        page = render_comments_page(lead_id, comments[:PAGE_ROWS], len(comments) > PAGE_ROWS, texts, settings.crm)
    else:
        rows = [h for h in reversed(await uow.leads.history(actor, lead_id)) if before is None or h.id < before]
        page = render_history_page(lead_id, rows[:PAGE_ROWS], len(rows) > PAGE_ROWS, texts, settings.crm)
    return page.text, more_keyboard(kind, lead_id, page.next_before, texts)


async def on_more(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    """From the card: the first page as a new message, so the card stays where it is."""
    kind = MoreKind.COMMENTS if callback_data.action is LeadAction.MORE_COMMENTS else MoreKind.HISTORY
    text, markup = await _more_page(uow, actor, kind, callback_data.lead_id, 0, texts, settings)
    await _send(query, bot, text, markup)
    await query.answer()


async def on_more_page(
    query: CallbackQuery,
    callback_data: LeadMoreCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    text, markup = await _more_page(
        uow, actor, callback_data.kind, callback_data.lead_id, callback_data.before_id, texts, settings
    )
    await _redraw(query, bot, text, markup)
    await query.answer()


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_lead, Command("lead"))
    router.message.register(cmd_assign, Command("assign"), flags=WRITES)

    router.callback_query.register(on_open, LeadCB.filter(F.action == LeadAction.OPEN))
    router.callback_query.register(on_card, LeadCB.filter(F.action == LeadAction.CARD))
    router.callback_query.register(on_status_menu, LeadCB.filter(F.action == LeadAction.STATUS))
    router.callback_query.register(on_status, LeadStatusCB.filter(), flags=WRITES)
    router.callback_query.register(on_comment_start, LeadCB.filter(F.action == LeadAction.COMMENT))
    router.callback_query.register(on_assign_menu, LeadCB.filter(F.action == LeadAction.ASSIGN))
    router.callback_query.register(on_assign_page, AssignPageCB.filter())
    router.callback_query.register(on_assign, AssignCB.filter(), flags=WRITES)
    router.callback_query.register(on_edit_menu, LeadCB.filter(F.action == LeadAction.EDIT))
    router.callback_query.register(on_edit_clear, LeadEditCB.filter(F.clear), flags=WRITES)
    router.callback_query.register(on_edit_field, LeadEditCB.filter(~F.clear))
    router.callback_query.register(on_source, LeadSourceCB.filter(), flags=WRITES)
    router.callback_query.register(on_delete_ask, LeadCB.filter(F.action == LeadAction.DELETE))
    router.callback_query.register(
        on_delete_confirm, LeadCB.filter(F.action == LeadAction.DELETE_CONFIRM), flags=WRITES
    )
    router.callback_query.register(
        on_more, LeadCB.filter(F.action.in_({LeadAction.MORE_COMMENTS, LeadAction.MORE_HISTORY}))
    )
    router.callback_query.register(on_more_page, LeadMoreCB.filter())

    forms = conversation_router(f"{__name__}.forms", RefusalForm, CommentForm, EditForm)
    forms.message.register(on_refusal_reason, StateFilter(RefusalForm.reason), HasText(), flags=WRITES)
    forms.message.register(on_comment_text, StateFilter(CommentForm.text), HasText(), flags=WRITES)
    forms.message.register(on_edit_value, StateFilter(EditForm.value), HasText(), flags=WRITES)
    forms.message.register(on_text_expected)
    router.include_router(forms)
    return router
