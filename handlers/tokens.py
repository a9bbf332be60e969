"""/token: a personal HTTP API token, shown once; /token revoke: revoke every token of the user."""

from __future__ import annotations

from aiogram import Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.middlewares import WRITES
from bot.presentation.views import esc
from bot.texts import Texts
from db.permissions import Actor
from db.uow import UnitOfWork


async def cmd_token(message: Message, command: CommandObject, actor: Actor, uow: UnitOfWork, texts: Texts) -> None:
    if message.chat.type != ChatType.PRIVATE:
        # A token posted in a group is a token leaked to the group.
        await message.answer(texts.t("tokens.private_only"))
        return
    action = (command.args or "").strip().lower()
    if action == "revoke":
        count = await uow.tokens.revoke_all(actor)
        await message.answer(texts.t("tokens.revoked", count=count) if count else texts.t("tokens.nothing_to_revoke"))
    elif action:
        await message.answer(texts.t("tokens.usage"))
    else:
        token = await uow.tokens.issue(actor)
        await message.answer(texts.t("tokens.issued", token=esc(token)))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_token, Command("token"), flags=WRITES)
    return router
