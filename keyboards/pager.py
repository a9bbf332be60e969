"""Paging for pickers that list people as buttons (the salesperson filter, assigning, /new).

Telegram refuses an inline keyboard of more than 100 buttons, so a picker shows ``PEOPLE_PER_PAGE`` people
at a time with "« …" / "… »" buttons. A page number from a button is never trusted: ``page_of`` clamps it
into range, so a forged or outdated one shows the nearest real page instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiogram.types import InlineKeyboardButton

from bot.texts import Texts
from keyboards.buttons import callback_button

PEOPLE_PER_PAGE = 20

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageSlice(Generic[T]):
    """One page of a list: its items and where it stands (``page`` counted from 0, already in range)."""

    items: tuple[T, ...]
    page: int
    has_prev: bool
    has_next: bool


def page_of(items: Sequence[T], page: int, size: int = PEOPLE_PER_PAGE) -> PageSlice[T]:
    """Page ``page`` (from 0) of ``items``, the number clamped to the pages there are (an empty list has one)."""
    if size < 1:
        raise ValueError("page size must be positive")
    last = max(0, (len(items) - 1) // size)
    page = min(max(page, 0), last)
    start = page * size
    return PageSlice(items=tuple(items[start : start + size]), page=page, has_prev=page > 0, has_next=page < last)


def nav_row(current: PageSlice[Any], texts: Texts, data_for_page: Callable[[int], str]) -> list[InlineKeyboardButton]:
    """The "« Previous" / "Next »" buttons ``current`` needs (none on a single page); ``data_for_page``
    gives the callback data of a page number (counted from 0)."""
    row: list[InlineKeyboardButton] = []
    if current.has_prev:
        row.append(callback_button(texts.t("common.prev"), data_for_page(current.page - 1)))
    if current.has_next:
        row.append(callback_button(texts.t("common.next"), data_for_page(current.page + 1)))
    return row
