"""/leads: a page of leads with status/source/salesperson filters and keyset paging; /find: search.

Navigation edits the list message in place. Every button's data is re-checked here (a status code,
a source index, a salesperson id), so a forged or outdated button gets an answer, never an error; what
the user may see is still decided by the repository (a salesperson only ever gets their own leads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot.config import Settings
from bot.presentation.views import MESSAGE_LIMIT, cut, esc, format_phone_html, status_label
from bot.texts import Texts
from db import permissions
from db.enums import LeadStatus, Role, StatusCode
from db.permissions import Actor
from db.repositories import LeadFilter
from db.repositories.leads import LeadRow
from db.uow import UnitOfWork
from handlers.exports import send_export
from handlers.filters import HasText, PrivateChat, conversation_router
from keyboards.callbacks import LeadListAction, LeadListCB, MenuAction, MenuCB
from keyboards.leads_list import (
    UNASSIGNED,
    ListFilters,
    Paging,
    list_keyboard,
    results_keyboard,
    seller_picker,
    source_picker,
    status_picker,
)

ROW_NAME_LIMIT = 60  # characters of a client name in a list row (the card shows it whole)
QUERY_SHOWN_LIMIT = 100  # characters of the search text repeated in the answer
MAX_PAGE = 999_999  # a forged page number is clamped into 1..MAX_PAGE
MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger forged cursor or id must not reach the driver
_FOOTER_RESERVE = 200  # room kept for the "… and N more" line under the rows


class FindStates(StatesGroup):
    query = State()


# ---- rendering ---------------------------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class RowTexts:
    """The words every row of a list shares (its template, the status names, "unassigned"), looked up
    once per language rather than for each row."""

    template: str
    statuses: Mapping[LeadStatus, str]
    unassigned: str


@lru_cache(maxsize=8)
def row_texts(lang: str) -> RowTexts:
    texts = Texts(lang)
    return RowTexts(
        # Without params ``t`` gives the template itself; the row formats it as ``t`` would.
        template=texts.t("leads.row"),
        statuses={status: status_label(texts, status) for status in LeadStatus},
        unassigned=texts.t("leads.unassigned"),
    )


def lead_row(words: RowTexts, lead: LeadRow) -> str:
    assignee = lead.assignee_name
    return words.template.format(
        lead_id=lead.id,
        name=esc(_shorten(lead.client_name, ROW_NAME_LIMIT)),
        phone=format_phone_html(lead.phone_number),
        status=words.statuses[lead.status],
        assignee=esc(assignee) if assignee is not None else words.unassigned,
    )


def render_rows(texts: Texts, header: str, leads: Sequence[LeadRow], footer: str = "") -> str:
    """Header, one line per lead and a footer, within Telegram's limit: rows that do not fit are
    left to their buttons (which are always all there) and counted in one line instead."""
    budget = MESSAGE_LIMIT - len(header) - len(footer) - _FOOTER_RESERVE
    words = row_texts(texts.lang)
    lines: list[str] = []
    for index, lead in enumerate(leads):
        row = lead_row(words, lead)
        if len(row) + 1 > budget:
            lines.append(texts.t("leads.rows_hidden", count=len(leads) - index))
            break
        budget -= len(row) + 1
        lines.append(row)
    parts = [header, "\n".join(lines)]
    if footer:
        parts.append(footer)
    return cut("\n\n".join(part for part in parts if part))


async def _header(
    actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, filters: ListFilters, page: int | None
) -> str:
    own = not permissions.can_view_all(actor)
    parts = [texts.t("leads.title_own" if own else "leads.title")]
    if filters.status is not None:
        parts.append(texts.t("leads.header.status", status=status_label(texts, filters.status.status)))
    if filters.source is not None:
        parts.append(texts.t("leads.header.source", source=esc(settings.crm.sources[filters.source])))
    if filters.seller == UNASSIGNED:
        parts.append(texts.t("leads.header.unassigned"))
    elif filters.seller is not None:
        seller = await uow.users.by_id(filters.seller)
        name = seller.full_name if seller is not None else f"#{filters.seller}"
        parts.append(texts.t("leads.header.seller", name=esc(_shorten(name, ROW_NAME_LIMIT))))
    if page is not None:
        parts.append(texts.t("leads.header.page", page=page))
    return "<b>" + " · ".join(parts) + "</b>"


def _lead_filter(filters: ListFilters, settings: Settings) -> LeadFilter:
    return LeadFilter(
        status=None if filters.status is None else filters.status.status,
        source=None if filters.source is None else settings.crm.sources[filters.source],
        assigned_to=filters.seller if filters.seller not in (None, UNASSIGNED) else None,
        unassigned=filters.seller == UNASSIGNED,
    )


async def render_list(
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    filters: ListFilters,
    *,
    page: int = 1,
    before_id: int | None = None,
    after_id: int | None = None,
) -> tuple[str, InlineKeyboardMarkup]:
    """One page of the list: the first (no cursor), older than ``before_id`` or newer than ``after_id``."""
    flt = _lead_filter(filters, settings)
    size = settings.crm.page_size
    paging: Paging | None = None
    items: list[LeadRow] = []
    if after_id is not None:
        result = await uow.leads.page(actor, flt, limit=size, after_id=after_id)
        if result.has_more:
            items = result.items
            paging = Paging(page=max(2, page), newer_cursor=items[0].id, older_cursor=items[-1].id)
        # Otherwise this is the top of the list: show a full first page rather than a short one.
    if paging is None:
        if after_id is not None:
            before_id = None
        result = await uow.leads.page(actor, flt, limit=size, before_id=before_id)
        items = result.items
        if before_id is None:
            page = 1
        older = items[-1].id if result.has_more and items else None
        newer = items[0].id if before_id is not None and items else None
        paging = Paging(
            page=max(2, page) if before_id is not None else 1,
            newer_cursor=newer,
            older_cursor=older,
            to_start=before_id is not None and not items,
        )
    header = await _header(actor, uow, texts, settings, filters, paging.page)
    if items:
        text = render_rows(texts, header, items)
    else:
        text = header + "\n\n" + texts.t("leads.empty_filtered" if filters.active else "leads.empty")
    markup = list_keyboard(texts, items, filters, paging, seller_filter=permissions.can_view_all(actor))
    return text, markup


# ---- checking button data ----------------------------------------------------------------------------


async def _checked_filters(data: LeadListCB, actor: Actor, uow: UnitOfWork, settings: Settings) -> ListFilters | None:
    """The filter a button asks for, or None when it names something that does not exist."""
    status: StatusCode | None = None
    if data.status is not None:
        try:
            status = StatusCode(data.status)
        except ValueError:
            return None
    if data.source is not None and not 0 <= data.source < len(settings.crm.sources):
        return None
    seller = data.seller
    if not permissions.can_view_all(actor):
        # Salespeople have no salesperson filter (they see their own leads); a forged one is ignored.
        seller = None
    elif seller is not None and seller != UNASSIGNED:
        if not 0 < seller <= MAX_ID:
            return None
        user = await uow.users.by_id(seller)
        if user is None or user.role != Role.SELLER:
            return None
    return ListFilters(status=status, source=data.source, seller=seller)


def _cursor(value: int | None) -> int | None:
    if value is None or value < 1:
        return None
    return min(value, MAX_ID)


async def _edit(bot: Bot, query: CallbackQuery, text: str, markup: InlineKeyboardMarkup) -> bool:
    if query.message is None:
        return False
    await bot.edit_message_text(
        text=text, chat_id=query.message.chat.id, message_id=query.message.message_id, reply_markup=markup
    )
    return True


# ---- handlers ----------------------------------------------------------------------------------------


async def cmd_leads(message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = await render_list(actor, uow, texts, settings, ListFilters())
    await message.answer(text, reply_markup=markup)


async def on_menu_leads(
    query: CallbackQuery, bot: Bot, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings
) -> None:
    text, markup = await render_list(actor, uow, texts, settings, ListFilters())
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await bot.send_message(chat_id, text, reply_markup=markup)
    await query.answer()


async def on_list_page(
    query: CallbackQuery,
    callback_data: LeadListCB,
    bot: Bot,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
) -> None:
    filters = await _checked_filters(callback_data, actor, uow, settings)
    if filters is None:
        await query.answer(texts.t("leads.filter_invalid"), show_alert=True)
        return
    page = min(max(callback_data.page, 1), MAX_PAGE)
    cursor = _cursor(callback_data.cursor)
    action = callback_data.action
    text, markup = await render_list(
        actor,
        uow,
        texts,
        settings,
        filters,
        page=page,
        before_id=cursor if action == LeadListAction.OLDER else None,
        after_id=cursor if action == LeadListAction.NEWER else None,
    )
    if not await _edit(bot, query, text, markup):
        await query.answer(texts.t("common.stale_button"), show_alert=True)
        return
    await query.answer()


async def on_list_pick(
    query: CallbackQuery,
    callback_data: LeadListCB,
    bot: Bot,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
) -> None:
    filters = await _checked_filters(callback_data, actor, uow, settings)
    action = callback_data.action
    if filters is None or (action == LeadListAction.PICK_SELLER and not permissions.can_view_all(actor)):
        await query.answer(texts.t("leads.filter_invalid"), show_alert=True)
        return
    header = await _header(actor, uow, texts, settings, filters, None)
    if action == LeadListAction.PICK_STATUS:
        prompt, markup = texts.t("leads.pick.status"), status_picker(texts, filters)
    elif action == LeadListAction.PICK_SOURCE:
        prompt, markup = texts.t("leads.pick.source"), source_picker(texts, settings.crm.sources, filters)
    else:
        sellers = await uow.users.active_sellers()
        # ``page`` pages the picker itself (from 1); seller_picker clamps a forged one.
        prompt, markup = texts.t("leads.pick.seller"), seller_picker(texts, sellers, filters, callback_data.page)
    if not await _edit(bot, query, f"{header}\n\n{prompt}", markup):
        await query.answer(texts.t("common.stale_button"), show_alert=True)
        return
    await query.answer()


# ---- /find ---------------------------------------------------------------------------------------------


async def _send_results(
    message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, raw: str
) -> None:
    """At most one page of matches. Too short a text raises InvalidInput (``query_too_short``)."""
    size = settings.crm.page_size
    found = await uow.leads.search(actor, raw, limit=size + 1)
    shown_query = esc(_shorten(" ".join(raw.split()), QUERY_SHOWN_LIMIT))
    if not found:
        await message.answer(texts.t("find.none", query=shown_query))
        return
    footer = texts.t("find.more", count=size) if len(found) > size else ""
    text = render_rows(texts, texts.t("find.header", query=shown_query), found[:size], footer)
    await message.answer(text, reply_markup=results_keyboard(found[:size]))


async def cmd_find(
    message: Message,
    command: CommandObject,
    state: FSMContext,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
) -> None:
    if not (command.args or "").strip():
        await state.set_state(FindStates.query)
        await message.answer(texts.t("find.ask"))
        return
    await _send_results(message, actor, uow, texts, settings, command.args or "")


async def on_menu_find(query: CallbackQuery, bot: Bot, state: FSMContext, texts: Texts) -> None:
    await state.set_state(FindStates.query)
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await bot.send_message(chat_id, texts.t("find.ask"))
    await query.answer()


async def on_find_text(
    message: Message, state: FSMContext, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings
) -> None:
    # A too-short text raises before the state is cleared: the user is told why and can type again.
    await _send_results(message, actor, uow, texts, settings, message.text or "")
    await state.clear()


async def on_find_invalid(message: Message, texts: Texts) -> None:
    await message.answer(texts.t("find.ask_invalid"))


async def on_list_export(
    query: CallbackQuery,
    callback_data: LeadListCB,
    bot: Bot,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
) -> None:
    """The list's "Excel" button: the leads of its filters as a file (handlers.exports)."""
    filters = await _checked_filters(callback_data, actor, uow, settings)
    if filters is None:
        await query.answer(texts.t("leads.filter_invalid"), show_alert=True)
        return
    await query.answer()
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await send_export(bot, chat_id, actor, uow, texts, settings, _lead_filter(filters, settings))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_leads, Command("leads"), PrivateChat())
    router.message.register(cmd_find, Command("find"), PrivateChat())
    router.callback_query.register(on_menu_leads, MenuCB.filter(F.action.in_({MenuAction.LEADS, MenuAction.MY_LEADS})))
    router.callback_query.register(on_menu_find, MenuCB.filter(F.action == MenuAction.FIND))
    router.callback_query.register(
        on_list_page,
        LeadListCB.filter(F.action.in_({LeadListAction.SHOW, LeadListAction.OLDER, LeadListAction.NEWER})),
    )
    router.callback_query.register(
        on_list_pick,
        LeadListCB.filter(
            F.action.in_({LeadListAction.PICK_STATUS, LeadListAction.PICK_SOURCE, LeadListAction.PICK_SELLER})
        ),
    )

    router.callback_query.register(on_list_export, LeadListCB.filter(F.action == LeadListAction.EXPORT))

    find = conversation_router(f"{__name__}.find", FindStates)
    find.message.register(on_find_text, StateFilter(FindStates.query), HasText())
    find.message.register(on_find_invalid, StateFilter(FindStates.query))
    router.include_router(find)
    return router
