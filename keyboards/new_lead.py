"""Keyboards of the /new conversation. Buttons carry indexes and ids only, never the text shown.

Every step of /new shows one of these, so they are built from ``keyboards.buttons`` (copies of one
validated button) rather than aiogram's ``InlineKeyboardBuilder``, which copies all of its buttons
again for each one added.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import Texts
from db.models import User
from keyboards.buttons import callback_button, inline_markup
from keyboards.callbacks import LeadAction, LeadCB, NewLeadAction, NewLeadCB
from keyboards.pager import nav_row, page_of


def _button(text: str, action: NewLeadAction, value: int = 0) -> InlineKeyboardButton:
    return callback_button(text, NewLeadCB(action=action, value=value).pack())


def _cancel(texts: Texts) -> InlineKeyboardButton:
    return _button(texts.t("common.cancel"), NewLeadAction.CANCEL)


def _in_pairs(buttons: Sequence[InlineKeyboardButton]) -> list[list[InlineKeyboardButton]]:
    return [list(buttons[i : i + 2]) for i in range(0, len(buttons), 2)]


def cancel_only(texts: Texts) -> InlineKeyboardMarkup:
    return inline_markup([[_cancel(texts)]])


def sources(names: Sequence[str], texts: Texts) -> InlineKeyboardMarkup:
    buttons = [_button(name, NewLeadAction.SOURCE, index) for index, name in enumerate(names)]
    return inline_markup(_in_pairs([*buttons, _cancel(texts)]))


def skip(action: NewLeadAction, texts: Texts) -> InlineKeyboardMarkup:
    return inline_markup([[_button(texts.t("common.skip"), action), _cancel(texts)]])


def assignees(sellers: Sequence[User], texts: Texts, page: int = 0) -> InlineKeyboardMarkup:
    """Page ``page`` (from 0, clamped) of the salespeople, one a row, then « / », then Skip and Cancel."""
    shown = page_of(sellers, page)
    rows: list[list[InlineKeyboardButton]] = []
    for seller in shown.items:
        # Button captions are plain text (no HTML parsing), so the name goes in unescaped.
        caption = f"{seller.full_name} (@{seller.username})" if seller.username else seller.full_name
        rows.append([_button(caption[:64], NewLeadAction.ASSIGNEE, seller.id)])
    nav = nav_row(shown, texts, lambda index: NewLeadCB(action=NewLeadAction.ASSIGNEE_PAGE, value=index).pack())
    if nav:
        rows.append(list(nav))
    rows.append([_button(texts.t("common.skip"), NewLeadAction.SKIP_ASSIGNEE), _cancel(texts)])
    return inline_markup(rows)


def confirm(texts: Texts) -> InlineKeyboardMarkup:
    return inline_markup([[_button(texts.t("newlead.btn.create"), NewLeadAction.CREATE), _cancel(texts)]])


def open_card(lead_id: int | None, texts: Texts, *, cancel: bool = False) -> InlineKeyboardMarkup | None:
    """ "Open card" for ``lead_id`` (None: the user may not view it) and, mid-conversation, "Cancel"."""
    row: list[InlineKeyboardButton] = []
    if lead_id is not None:
        row.append(callback_button(texts.t("newlead.btn.open"), LeadCB.packed(LeadAction.OPEN, lead_id)))
    if cancel:
        row.append(_cancel(texts))
    return inline_markup([row]) if row else None
