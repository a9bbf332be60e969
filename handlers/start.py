"""/start: admins from the config join, invited people join by deep link, members get their menu."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from bot.commands import set_chat_commands
from bot.middlewares import WRITES, profile_of
from bot.presentation.views import esc, role_label
from bot.texts import Texts, pick_language, texts_for
from db.enums import Role
from db.errors import DomainError
from db.permissions import Actor
from db.uow import UnitOfWork
from keyboards.menu import main_menu


async def cmd_start(
    message: Message,
    command: CommandObject,
    actor: Actor | None,
    uow: UnitOfWork,
    texts: Texts,
    state: FSMContext,
    bot: Bot,
) -> None:
    assert message.from_user is not None
    profile = profile_of(message.from_user)
    await state.clear()
    joined = False
    if command.args and (actor is None or not actor.is_active):
        try:
            actor = await uow.invites.accept(command.args.strip(), profile)
        except DomainError:
            if await uow.users.ensure_config_admin(profile) is None:
                raise
        else:
            joined = True
    admin = await uow.users.ensure_config_admin(profile)
    if admin is not None:
        actor = admin
    if actor is None or not actor.is_active:
        key = "access.unknown" if actor is None else "access.deactivated"
        await message.answer(texts.t(key, telegram_id=message.from_user.id))
        return
    texts = texts_for(pick_language(actor.language, message.from_user.language_code))
    role = Role(actor.role)
    if joined:
        await message.answer(texts.t("access.welcome_invited", role=role_label(texts, role)))
    await set_chat_commands(bot, message.chat.id, role, texts)
    await message.answer(
        texts.t("start.greeting", name=esc(actor.first_name or actor.full_name), role=role_label(texts, role)),
        reply_markup=main_menu(role, texts),
    )


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_start, CommandStart(), flags=WRITES)
    return router
