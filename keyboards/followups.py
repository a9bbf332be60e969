"""Keyboards of reminders, follow-ups and /tasks."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.texts import Texts
from db.enums import StatusCode
from keyboards.callbacks import (
    DuePreset,
    FollowUpAction,
    FollowUpCB,
    FollowUpDueCB,
    LeadAction,
    LeadCB,
    LeadStatusCB,
    SnoozeCB,
    SnoozeTarget,
    SnoozeUntil,
)


def due_keyboard(texts: Texts, presets: Sequence[DuePreset]) -> InlineKeyboardMarkup:
    """The due-time presets still ahead: in 1 hour, today 18:00, tomorrow 10:00."""
    builder = InlineKeyboardBuilder()
    for preset in presets:
        builder.button(text=texts.t(f"followups.btn.{preset.name.lower()}"), callback_data=FollowUpDueCB(preset=preset))
    builder.adjust(1)
    return builder.as_markup()


def _snooze_buttons(builder: InlineKeyboardBuilder, texts: Texts, target: SnoozeTarget, target_id: int) -> None:
    builder.button(
        text=texts.t("reminders.btn.snooze_hour"),
        callback_data=SnoozeCB(target=target, target_id=target_id, until=SnoozeUntil.HOUR),
    )
    builder.button(
        text=texts.t("reminders.btn.snooze_tomorrow"),
        callback_data=SnoozeCB(target=target, target_id=target_id, until=SnoozeUntil.TOMORROW),
    )


def reminder_keyboard(texts: Texts, lead_id: int) -> InlineKeyboardMarkup:
    """Under a "lead waits in «новый»" reminder: take it into work, open it, or snooze."""
    builder = InlineKeyboardBuilder()
    builder.button(
        text=texts.t("reminders.btn.take"), callback_data=LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK)
    )
    builder.button(text=texts.t("reminders.btn.open"), callback_data=LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    _snooze_buttons(builder, texts, SnoozeTarget.LEAD, lead_id)
    builder.adjust(2)
    return builder.as_markup()


def escalation_keyboard(texts: Texts, lead_id: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=texts.t("reminders.btn.open"), callback_data=LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    return builder.as_markup()


def followup_keyboard(texts: Texts, followup_id: int, lead_id: int) -> InlineKeyboardMarkup:
    """Under a follow-up's due reminder: done, snooze, open the lead."""
    builder = InlineKeyboardBuilder()
    builder.button(
        text=texts.t("followups.btn.done"),
        callback_data=FollowUpCB(action=FollowUpAction.DONE, followup_id=followup_id),
    )
    builder.button(text=texts.t("reminders.btn.open"), callback_data=LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    _snooze_buttons(builder, texts, SnoozeTarget.FOLLOWUP, followup_id)
    builder.adjust(2)
    return builder.as_markup()


def open_lead_keyboard(texts: Texts, lead_id: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    builder.button(text=texts.t("reminders.btn.open"), callback_data=LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    return builder.as_markup()


def tasks_keyboard(texts: Texts, followup_ids: Sequence[int]) -> InlineKeyboardMarkup | None:
    """One row per listed follow-up (numbered as in the list): done, +1 hour, tomorrow 10:00."""
    if not followup_ids:
        return None
    builder = InlineKeyboardBuilder()
    for number, followup_id in enumerate(followup_ids, start=1):
        builder.button(
            text=texts.t("tasks.btn.done", n=number),
            callback_data=FollowUpCB(action=FollowUpAction.DONE, followup_id=followup_id, in_list=True),
        )
        for until, key in ((SnoozeUntil.HOUR, "tasks.btn.hour"), (SnoozeUntil.TOMORROW, "tasks.btn.tomorrow")):
            builder.button(
                text=texts.t(key, n=number),
                callback_data=SnoozeCB(target=SnoozeTarget.FOLLOWUP, target_id=followup_id, until=until, in_list=True),
            )
    builder.adjust(3)
    return builder.as_markup()
