"""Callback data and buttons: what the hot keyboards build by hand is exactly what aiogram builds."""

from __future__ import annotations

import pytest
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from keyboards.buttons import callback_button, inline_markup
from keyboards.callbacks import CALLBACK_DATA_LIMIT, LeadAction, LeadCB, LeadListAction, LeadListCB


@pytest.mark.parametrize("action", list(LeadAction))
@pytest.mark.parametrize("lead_id", [1, 42, 1_000_000, 2**63 - 1])
def test_lead_packed_is_aiograms_pack(action: LeadAction, lead_id: int) -> None:
    packed = LeadCB.packed(action, lead_id)
    assert packed == LeadCB(action=action, lead_id=lead_id).pack()
    assert LeadCB.unpack(packed) == LeadCB(action=action, lead_id=lead_id)
    assert len(packed.encode()) <= CALLBACK_DATA_LIMIT


@pytest.mark.parametrize("text", ["Открыть", "#12 · Анна <Ким>", ""])
def test_callback_button_is_a_validated_button(text: str) -> None:
    data = LeadCB.packed(LeadAction.OPEN, 12)
    built = callback_button(text, data)
    validated = InlineKeyboardButton(text=text, callback_data=data)
    assert built == validated
    assert built.model_fields_set == validated.model_fields_set
    assert built.model_dump_json(exclude_none=True) == validated.model_dump_json(exclude_none=True)


def test_inline_markup_is_a_validated_markup() -> None:
    rows = [[callback_button("a", "ld:o:1"), callback_button("b", "ld:s:1")], [callback_button("c", "ld:k:1")]]
    built = inline_markup(rows)
    validated = InlineKeyboardMarkup(inline_keyboard=rows)
    assert built == validated
    assert built.model_dump_json(exclude_none=True) == validated.model_dump_json(exclude_none=True)
    # Each markup has rows of its own: changing the list given does not change the markup.
    rows[0].append(callback_button("d", "ld:d:1"))
    assert len(built.inline_keyboard[0]) == 2


@pytest.mark.parametrize("action", list(LeadListAction))
@pytest.mark.parametrize(
    "values",
    [
        {},
        {"status": 2, "page": 7, "cursor": 123_456},
        {"source": 0, "seller": 0},
        {"status": 0, "source": 5, "seller": 10**9, "page": 999_999, "cursor": 2**63 - 1},
    ],
)
def test_list_packed_is_aiograms_pack(action: LeadListAction, values: dict[str, int]) -> None:
    packed = LeadListCB.packed(action, **values)
    assert packed == LeadListCB(action=action, **values).pack()
    assert LeadListCB.unpack(packed) == LeadListCB(action=action, **values)
