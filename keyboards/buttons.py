"""Inline buttons for the keyboards shown on every update (the card, the lists).

aiogram's types are pydantic models, and validating one button takes longer than everything else a
button costs; a card carries eight and a list page fifteen. These buttons are copies of one validated
template with the two fields changed (``model_copy``): the same objects, equal to validated ones
(tests/test_callbacks.py), built in half the time. The values are valid by construction: a caption is a
``str``, the data a packed ``CallbackData`` (which checks its own 64-byte limit).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

_BUTTON = InlineKeyboardButton(text="", callback_data="")
_MARKUP = InlineKeyboardMarkup(inline_keyboard=[])


def callback_button(text: str, data: str) -> InlineKeyboardButton:
    return _BUTTON.model_copy(update={"text": text, "callback_data": data})


def inline_markup(rows: Sequence[Sequence[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    return _MARKUP.model_copy(update={"inline_keyboard": [list(row) for row in rows]})
