"""What nothing else took: unknown commands get a hint, unknown or stale buttons an answer."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import CallbackQuery, Message

from bot.texts import Texts


async def unknown_message(message: Message, texts: Texts) -> None:
    await message.answer(texts.t("common.unknown_command"))


async def unknown_callback(query: CallbackQuery, texts: Texts) -> None:
    await query.answer(texts.t("common.stale_button"), show_alert=True)


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(unknown_message, F.chat.type == ChatType.PRIVATE)
    router.callback_query.register(unknown_callback)
    return router
