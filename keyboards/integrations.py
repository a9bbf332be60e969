"""The /integrations buttons: "Retry failed" for each integration with failed jobs, and "Refresh"."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.texts import Texts
from db.repositories.integrations import FAILED, IntegrationOverview
from keyboards.callbacks import IntegrationCode, IntegrationsAction, IntegrationsCB


def integrations_keyboard(texts: Texts, overviews: Sequence[IntegrationOverview]) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for overview in overviews:
        failed = overview.counts[FAILED]
        if failed:
            builder.button(
                text=texts.t(
                    "integrations.btn.retry", name=texts.t(f"integration.{overview.integration}"), count=failed
                ),
                callback_data=IntegrationsCB(
                    action=IntegrationsAction.RETRY_FAILED, integration=IntegrationCode(overview.integration)
                ),
            )
    builder.button(
        text=texts.t("integrations.btn.refresh"), callback_data=IntegrationsCB(action=IntegrationsAction.REFRESH)
    )
    builder.adjust(1)
    return builder.as_markup()
