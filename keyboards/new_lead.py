"""Keyboards of the /new conversation. Buttons carry indexes and ids only, never the text shown."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.texts import Texts
from db.models import User
from keyboards.buttons import callback_button
from keyboards.callbacks import LeadAction, LeadCB, NewLeadAction, NewLeadCB
from keyboards.pager import nav_row, page_of


def _cancel(builder: InlineKeyboardBuilder, texts: Texts) -> None:
    builder.button(text=texts.t("common.cancel"), callback_data=NewLeadCB(action=NewLeadAction.CANCEL))


def cancel_only(texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    _cancel(builder, texts)
    return builder.as_markup()


def sources(names: Sequence[str], texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for index, name in enumerate(names):
        builder.button(text=name, callback_data=NewLeadCB(action=NewLeadAction.SOURCE, value=index))
    _cancel(builder, texts)
    builder.adjust(2)
    return builder.as_markup()


def skip(action: NewLeadAction, texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=texts.t("common.skip"), callback_data=NewLeadCB(action=action))
    _cancel(builder, texts)
    builder.adjust(2)
    return builder.as_markup()


def assignees(sellers: Sequence[User], texts: Texts, page: int = 0) -> InlineKeyboardMarkup:
    """Page ``page`` (from 0, clamped) of the salespeople, one a row, then « / », then Skip and Cancel."""
    shown = page_of(sellers, page)
    builder = InlineKeyboardBuilder()
    for seller in shown.items:
        # Button captions are plain text (no HTML parsing), so the name goes in unescaped.
        caption = f"{seller.full_name} (@{seller.username})" if seller.username else seller.full_name
        builder.button(text=caption[:64], callback_data=NewLeadCB(action=NewLeadAction.ASSIGNEE, value=seller.id))
    builder.adjust(1)
    nav = nav_row(shown, texts, lambda index: NewLeadCB(action=NewLeadAction.ASSIGNEE_PAGE, value=index).pack())
    if nav:
        builder.row(*nav)
    builder.row(
        callback_button(texts.t("common.skip"), NewLeadCB(action=NewLeadAction.SKIP_ASSIGNEE).pack()),
        callback_button(texts.t("common.cancel"), NewLeadCB(action=NewLeadAction.CANCEL).pack()),
    )
    return builder.as_markup()


def confirm(texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=texts.t("newlead.btn.create"), callback_data=NewLeadCB(action=NewLeadAction.CREATE))
    _cancel(builder, texts)
    builder.adjust(2)
    return builder.as_markup()


def open_card(lead_id: int | None, texts: Texts, *, cancel: bool = False) -> InlineKeyboardMarkup | None:
    """ "Open card" for ``lead_id`` (None: the user may not view it) and, mid-conversation, "Cancel"."""
    builder = InlineKeyboardBuilder()
    if lead_id is not None:
        builder.button(text=texts.t("newlead.btn.open"), callback_data=LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    if cancel:
        _cancel(builder, texts)
    builder.adjust(2)
    return builder.as_markup() if lead_id is not None or cancel else None
