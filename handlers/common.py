"""Commands that work everywhere and in every state: /cancel, /help, /lang."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.commands import command_names, set_chat_commands
from bot.middlewares import WRITES
from bot.presentation.views import esc
from bot.texts import Texts, texts_for
from db.enums import Role
from db.permissions import Actor
from db.uow import UnitOfWork
from handlers.filters import CANCEL_WORDS, TextIn
from keyboards.callbacks import LangCB


async def cmd_cancel(message: Message, state: FSMContext, texts: Texts) -> None:
    if await state.get_state() is None:
        await message.answer(texts.t("common.nothing_to_cancel"))
        return
    await state.clear()
    await message.answer(texts.t("common.cancelled"))


async def cmd_help(message: Message, actor: Actor, texts: Texts) -> None:
    lines = [texts.t("start.help_header")]
    # Command descriptions are plain text written for Telegram's menu (they contain "<id>").
    lines += [f"/{name} — {esc(texts.t(f'cmd.{name}'))}" for name in command_names(Role(actor.role))]
    await message.answer("\n".join(lines))


async def cmd_lang(message: Message, texts: Texts) -> None:
    builder = InlineKeyboardBuilder()
    builder.button(text="Русский", callback_data=LangCB(lang="ru"))
    builder.button(text="English", callback_data=LangCB(lang="en"))
    await message.answer(texts.t("lang.choose"), reply_markup=builder.as_markup())


async def on_lang(query: CallbackQuery, callback_data: LangCB, actor: Actor, uow: UnitOfWork, bot: Bot) -> None:
    await uow.users.set_language(actor, callback_data.lang)
    texts = texts_for(callback_data.lang)
    if query.message is not None:
        await set_chat_commands(bot, query.message.chat.id, Role(actor.role), texts)
        await bot.edit_message_text(
            texts.t("lang.set"), chat_id=query.message.chat.id, message_id=query.message.message_id
        )
    await query.answer()


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_cancel, Command("cancel"), StateFilter("*"))
    router.message.register(cmd_cancel, TextIn(*CANCEL_WORDS), StateFilter("*"))
    router.message.register(cmd_help, Command("help"), StateFilter("*"))
    router.message.register(cmd_lang, Command("lang"), StateFilter("*"))
    router.callback_query.register(on_lang, LangCB.filter(), flags=WRITES)
    return router
