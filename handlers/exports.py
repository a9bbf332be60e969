"""/export: every lead the user may see as an Excel file, with the last 30 days' analytics on a second sheet.

The file is written from the update's read unit (batch by batch, never all leads in memory) to a
temporary file; the unit is committed before the file travels to Telegram, and the file is removed after.
"""

from __future__ import annotations

import os

from aiogram import Bot, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import FSInputFile, Message

from bot.config import Settings
from bot.reports import period_text
from bot.texts import Texts
from bot.xlsx_export import export_name, export_to_file
from db import permissions
from db.analytics import Period
from db.permissions import Actor
from db.repositories import LeadFilter
from db.uow import UnitOfWork
from handlers.stats import today

ANALYTICS_DAYS = 30


async def send_export(
    bot: Bot, chat_id: int, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, flt: LeadFilter
) -> None:
    period = Period.last_days(today(settings), ANALYTICS_DAYS)
    path, count = await export_to_file(uow, actor, flt, period, texts, settings.crm)
    try:
        await uow.commit()
        caption = texts.t("export.caption", count=count, period=period_text(period))
        await bot.send_document(chat_id, FSInputFile(path, filename=export_name()), caption=caption)
    finally:
        os.unlink(path)


async def cmd_export(
    message: Message, bot: Bot, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings
) -> None:
    if message.chat.type != ChatType.PRIVATE:
        await message.answer(texts.t("reports.private_only"))
        return
    if not permissions.can_view_analytics(actor):
        await message.answer(texts.t("stats.forbidden"))
        return
    await send_export(bot, message.chat.id, actor, uow, texts, settings, LeadFilter())


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_export, Command("export"))
    return router
