"""The period picker of /stats and /report: typed button data, enum codes only."""

from __future__ import annotations

from enum import IntEnum

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.texts import Texts


class ReportKind(IntEnum):
    STATS = 1  # numbers and charts in the chat
    PDF = 2  # the PDF report


class PeriodChoice(IntEnum):
    TODAY = 1
    WEEK = 2  # the last 7 days, today included
    DAYS30 = 3
    MONTH = 4  # this calendar month so far
    RANGE = 5  # typed by the user


class StatsCB(CallbackData, prefix="st"):
    kind: ReportKind
    period: PeriodChoice


_LABELS = {
    PeriodChoice.TODAY: "stats.btn.today",
    PeriodChoice.WEEK: "stats.btn.week",
    PeriodChoice.DAYS30: "stats.btn.days30",
    PeriodChoice.MONTH: "stats.btn.month",
    PeriodChoice.RANGE: "stats.btn.range",
}


def period_picker(texts: Texts, kind: ReportKind) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for choice, key in _LABELS.items():
        builder.button(text=texts.t(key), callback_data=StatsCB(kind=kind, period=choice))
    builder.adjust(2, 2, 1)
    return builder.as_markup()
