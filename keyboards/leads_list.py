"""Keyboards of the /leads list and /find results: open buttons, paging, filter pickers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.presentation.views import status_label
from bot.texts import Texts
from db.enums import StatusCode
from db.models import User
from db.repositories.leads import LeadRow
from keyboards.buttons import callback_button, inline_markup
from keyboards.callbacks import LeadAction, LeadCB, LeadListAction, LeadListCB
from keyboards.pager import nav_row, page_of

UNASSIGNED = 0  # ``seller`` value meaning "leads nobody is assigned to"
BUTTON_NAME_LIMIT = 40


@dataclass(frozen=True, slots=True)
class ListFilters:
    """The filter a list message shows, already checked against the settings and the team."""

    status: StatusCode | None = None
    source: int | None = None  # index into settings.crm.sources
    seller: int | None = None  # users.id of a salesperson, or UNASSIGNED

    @property
    def active(self) -> bool:
        return (self.status, self.source, self.seller) != (None, None, None)

    def cb(self, action: LeadListAction, *, page: int = 1, cursor: int | None = None) -> LeadListCB:
        return LeadListCB(
            action=action,
            status=None if self.status is None else int(self.status),
            source=self.source,
            seller=self.seller,
            page=page,
            cursor=cursor,
        )

    def data(self, action: LeadListAction, *, page: int = 1, cursor: int | None = None) -> str:
        """``self.cb(...).pack()``, for the buttons every list page carries."""
        status = None if self.status is None else int(self.status)
        return LeadListCB.packed(
            action, status=status, source=self.source, seller=self.seller, page=page, cursor=cursor
        )

    def with_status(self, status: StatusCode | None) -> ListFilters:
        return ListFilters(status, self.source, self.seller)

    def with_source(self, source: int | None) -> ListFilters:
        return ListFilters(self.status, source, self.seller)

    def with_seller(self, seller: int | None) -> ListFilters:
        return ListFilters(self.status, self.source, seller)


@dataclass(frozen=True, slots=True)
class Paging:
    page: int
    newer_cursor: int | None = None  # id of the newest lead shown, when newer ones exist
    older_cursor: int | None = None  # id of the oldest lead shown, when older ones exist
    to_start: bool = False  # an empty deep page: offer the way back to page 1


def _shorten(text: str, limit: int = BUTTON_NAME_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def open_button(lead: LeadRow) -> InlineKeyboardButton:
    # Button captions are plain text: no escaping, only a length cap.
    return callback_button(_shorten(f"#{lead.id} · {lead.client_name}"), LeadCB.packed(LeadAction.OPEN, lead.id))


def results_keyboard(leads: Sequence[LeadRow]) -> InlineKeyboardMarkup | None:
    """/find results: one open button per lead."""
    if not leads:
        return None
    return inline_markup([[open_button(lead)] for lead in leads])


def list_keyboard(
    texts: Texts, leads: Sequence[LeadRow], filters: ListFilters, paging: Paging, *, seller_filter: bool
) -> InlineKeyboardMarkup:
    rows: list[list[InlineKeyboardButton]] = [[open_button(lead)] for lead in leads]
    nav: list[InlineKeyboardButton] = []
    if paging.newer_cursor is not None:
        data = filters.data(LeadListAction.NEWER, page=max(1, paging.page - 1), cursor=paging.newer_cursor)
        nav.append(callback_button(texts.t("leads.btn.newer"), data))
    if paging.to_start:
        nav.append(callback_button(texts.t("leads.btn.first"), filters.data(LeadListAction.SHOW)))
    if paging.older_cursor is not None:
        data = filters.data(LeadListAction.OLDER, page=paging.page + 1, cursor=paging.older_cursor)
        nav.append(callback_button(texts.t("leads.btn.older"), data))
    if nav:
        rows.append(nav)
    pickers = [
        callback_button(texts.t("leads.btn.status"), filters.data(LeadListAction.PICK_STATUS)),
        callback_button(texts.t("leads.btn.source"), filters.data(LeadListAction.PICK_SOURCE)),
    ]
    if seller_filter:
        pickers.append(callback_button(texts.t("leads.btn.seller"), filters.data(LeadListAction.PICK_SELLER)))
    rows.append(pickers)
    rows.append([callback_button(texts.t("leads.btn.export"), filters.data(LeadListAction.EXPORT))])
    if filters.active:
        rows.append([callback_button(texts.t("leads.btn.reset"), ListFilters().data(LeadListAction.SHOW))])
    return inline_markup(rows)


def _mark(caption: str, chosen: bool) -> str:
    return f"✓ {caption}" if chosen else caption


def status_picker(texts: Texts, filters: ListFilters) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for code in StatusCode:
        builder.button(
            text=_mark(status_label(texts, code.status), filters.status == code),
            callback_data=filters.with_status(code).cb(LeadListAction.SHOW),
        )
    builder.button(
        text=_mark(texts.t("leads.btn.any_status"), filters.status is None),
        callback_data=filters.with_status(None).cb(LeadListAction.SHOW),
    )
    builder.button(text=texts.t("common.back"), callback_data=filters.cb(LeadListAction.SHOW))
    builder.adjust(2)
    return builder.as_markup()


def source_picker(texts: Texts, sources: Sequence[str], filters: ListFilters) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for index, source in enumerate(sources):
        builder.button(
            text=_mark(_shorten(source), filters.source == index),
            callback_data=filters.with_source(index).cb(LeadListAction.SHOW),
        )
    builder.button(
        text=_mark(texts.t("leads.btn.any_source"), filters.source is None),
        callback_data=filters.with_source(None).cb(LeadListAction.SHOW),
    )
    builder.button(text=texts.t("common.back"), callback_data=filters.cb(LeadListAction.SHOW))
    builder.adjust(2)
    return builder.as_markup()


def seller_picker(texts: Texts, sellers: Sequence[User], filters: ListFilters, page: int = 1) -> InlineKeyboardMarkup:
    """Page ``page`` (from 1, clamped) of the salespeople, then "unassigned", "all", « / » and « Back."""
    shown = page_of(sellers, page - 1)
    builder = InlineKeyboardBuilder()
    for seller in shown.items:
        builder.button(
            text=_mark(_shorten(seller.full_name), filters.seller == seller.id),
            callback_data=filters.with_seller(seller.id).cb(LeadListAction.SHOW),
        )
    builder.button(
        text=_mark(texts.t("leads.btn.unassigned"), filters.seller == UNASSIGNED),
        callback_data=filters.with_seller(UNASSIGNED).cb(LeadListAction.SHOW),
    )
    builder.button(
        text=_mark(texts.t("leads.btn.any_seller"), filters.seller is None),
        callback_data=filters.with_seller(None).cb(LeadListAction.SHOW),
    )
    builder.adjust(2)
    nav = nav_row(shown, texts, lambda index: filters.data(LeadListAction.PICK_SELLER, page=index + 1))
    if nav:
        builder.row(*nav)
    builder.row(callback_button(texts.t("common.back"), filters.data(LeadListAction.SHOW)))
    return builder.as_markup()
