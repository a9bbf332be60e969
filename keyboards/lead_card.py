"""Keyboards of the lead card: only the buttons this user may use, decided with db.permissions.

The repository still enforces every action; a button shown here is a convenience, never a permission.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.presentation.cards import Card
from bot.presentation.views import status_label
from bot.texts import Texts
from db import permissions
from db.enums import LeadField, LeadStatus
from db.models import User
from db.permissions import Actor
from db.rows import LeadCardRow
from keyboards.buttons import callback_button, inline_markup
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
from keyboards.pager import nav_row, page_of

EDIT_FIELDS: dict[EditField, LeadField] = {
    EditField.CLIENT_NAME: LeadField.CLIENT_NAME,
    EditField.PHONE_NUMBER: LeadField.PHONE_NUMBER,
    EditField.SOURCE: LeadField.SOURCE,
    EditField.BUDGET: LeadField.BUDGET,
    EditField.NOTES: LeadField.NOTES,
    EditField.CLOSING_DATE: LeadField.CLOSING_DATE,
}
CLEARABLE = frozenset({EditField.NOTES, EditField.CLOSING_DATE})


def extra_rows(actor: Actor, lead: LeadCardRow, texts: Texts) -> list[list[InlineKeyboardButton]]:
    """THE place for rows other features add to the card, between the actions and the "more" buttons.

    Reserved for the notifications features: ``LeadAction.TAKE`` (a salesperson takes an unassigned
    lead, ``permissions.can_take``) and ``LeadAction.FOLLOWUP`` (set a follow-up). Return one list
    per row; show a button only when ``actor`` may use it. The lead card handlers do not handle
    these actions: the owning feature's router does.
    """
    rows: list[list[InlineKeyboardButton]] = []
    if permissions.can_update(actor, lead):
        rows.append([_button(texts.t("followups.btn.set"), LeadCB.packed(LeadAction.FOLLOWUP, lead.id))])
    return rows


def card_keyboard(
    actor: Actor, lead: LeadCardRow, moves: Sequence[LeadStatus], card: Card, texts: Texts
) -> InlineKeyboardMarkup | None:
    lead_id = lead.id
    rows: list[list[InlineKeyboardButton]] = []
    first: list[InlineKeyboardButton] = []
    if moves:
        first.append(_button(texts.t("card.btn.status"), LeadCB.packed(LeadAction.STATUS, lead_id)))
    if permissions.can_comment(actor, lead):
        first.append(_button(texts.t("card.btn.comment"), LeadCB.packed(LeadAction.COMMENT, lead_id)))
    second: list[InlineKeyboardButton] = []
    if permissions.can_assign(actor):
        second.append(_button(texts.t("card.btn.assign"), LeadCB.packed(LeadAction.ASSIGN, lead_id)))
    if permissions.can_update(actor, lead):
        second.append(_button(texts.t("card.btn.edit"), LeadCB.packed(LeadAction.EDIT, lead_id)))
    if permissions.can_delete(actor):
        second.append(_button(texts.t("card.btn.delete"), LeadCB.packed(LeadAction.DELETE, lead_id)))
    rows += [row for row in (first, second) if row]
    rows += extra_rows(actor, lead, texts)
    more: list[InlineKeyboardButton] = []
    if card.more_comments:
        more.append(_button(texts.t("card.btn.more_comments"), LeadCB.packed(LeadAction.MORE_COMMENTS, lead_id)))
    if card.more_history:
        more.append(_button(texts.t("card.btn.more_history"), LeadCB.packed(LeadAction.MORE_HISTORY, lead_id)))
    if more:
        rows.append(more)
    return inline_markup(rows) if rows else None


def status_keyboard(lead_id: int, moves: Sequence[LeadStatus], texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for status in moves:
        builder.button(
            text=texts.t("card.btn.move", status=status_label(texts, status)),
            callback_data=LeadStatusCB(lead_id=lead_id, code=status.code),
        )
    builder.adjust(2)
    builder.row(_back(lead_id, texts))
    return builder.as_markup()


def assign_keyboard(
    lead_id: int,
    sellers: Sequence[User],
    current_id: int | None,
    texts: Texts,
    *,
    back: bool = True,
    page: int = 0,
) -> InlineKeyboardMarkup:
    """Page ``page`` (from 0, clamped) of the salespeople, « / » and, under the card, « Back."""
    shown = page_of(sellers, page)
    builder = InlineKeyboardBuilder()
    for seller in shown.items:
        mark = "✓ " if seller.id == current_id else ""
        builder.button(
            text=f"{mark}{seller.full_name}"[:64], callback_data=AssignCB(lead_id=lead_id, user_id=seller.id)
        )
    builder.adjust(2)
    nav = nav_row(shown, texts, lambda index: AssignPageCB(lead_id=lead_id, page=index, back=back).pack())
    if nav:
        builder.row(*nav)
    if back:
        builder.row(_back(lead_id, texts))
    return builder.as_markup()


def edit_keyboard(lead_id: int, texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for field, name in EDIT_FIELDS.items():
        builder.button(
            text=texts.t(f"card.btn.field.{name.value}"), callback_data=LeadEditCB(lead_id=lead_id, field=field)
        )
    builder.adjust(3)
    builder.row(_back(lead_id, texts))
    return builder.as_markup()


def source_keyboard(lead_id: int, sources: Sequence[str], current: str, texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for index, source in enumerate(sources):
        mark = "✓ " if source == current else ""
        builder.button(text=f"{mark}{source}"[:64], callback_data=LeadSourceCB(lead_id=lead_id, index=index))
    builder.adjust(2)
    builder.row(_back(lead_id, texts))
    return builder.as_markup()


def clear_keyboard(lead_id: int, field: EditField, texts: Texts) -> InlineKeyboardMarkup | None:
    if field not in CLEARABLE:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[[_button(texts.t("card.btn.clear"), LeadEditCB(lead_id=lead_id, field=field, clear=True))]]
    )


def delete_keyboard(lead_id: int, texts: Texts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _button(texts.t("card.btn.delete_confirm"), LeadCB.packed(LeadAction.DELETE_CONFIRM, lead_id)),
                _button(texts.t("common.no"), LeadCB.packed(LeadAction.CARD, lead_id)),
            ]
        ]
    )


def more_keyboard(kind: MoreKind, lead_id: int, next_before: int | None, texts: Texts) -> InlineKeyboardMarkup:
    row: list[InlineKeyboardButton] = []
    if next_before is not None:
        row.append(_button(texts.t("card.btn.older"), LeadMoreCB(kind=kind, lead_id=lead_id, before_id=next_before)))
    row.append(_button(texts.t("card.btn.card"), LeadCB.packed(LeadAction.OPEN, lead_id)))
    return InlineKeyboardMarkup(inline_keyboard=[row])


def _back(lead_id: int, texts: Texts) -> InlineKeyboardButton:
    return _button(texts.t("common.back"), LeadCB.packed(LeadAction.CARD, lead_id))


def _button(
    text: str, data: str | LeadCB | LeadStatusCB | AssignCB | LeadEditCB | LeadSourceCB | LeadMoreCB
) -> InlineKeyboardButton:
    return callback_button(text, data if isinstance(data, str) else data.pack())
