"""Callback data: what the hot keyboards pack by hand is exactly what aiogram packs and unpacks."""

from __future__ import annotations

import pytest

from keyboards.callbacks import CALLBACK_DATA_LIMIT, LeadAction, LeadCB


@pytest.mark.parametrize("action", list(LeadAction))
@pytest.mark.parametrize("lead_id", [1, 42, 1_000_000, 2**63 - 1])
def test_lead_packed_is_aiograms_pack(action: LeadAction, lead_id: int) -> None:
    packed = LeadCB.packed(action, lead_id)
    assert packed == LeadCB(action=action, lead_id=lead_id).pack()
    assert LeadCB.unpack(packed) == LeadCB(action=action, lead_id=lead_id)
    assert len(packed.encode()) <= CALLBACK_DATA_LIMIT
