"""The Telegram command menu, per role: each user's chat shows only what their role can use."""

from __future__ import annotations

from aiogram import Bot
from aiogram.types import BotCommand, BotCommandScopeChat

from bot.texts import Texts
from db.enums import Role

_COMMON = ["start", "leads", "lead", "find"]
# The reports (/stats, /export, /report) are for everyone: a salesperson's cover their own leads.
_REPORTS = ["stats", "export", "report"]
_BY_ROLE: dict[Role, list[str]] = {
    Role.ADMIN: [
        *["start", "new", "import", "leads", "lead", "find", "assign", "tasks", "users", "invite", "outbox", "token"],
        *_REPORTS,
        "sheets",
        "integrations",
    ],
    Role.ROP: [
        *["start", "new", "import", "leads", "lead", "find", "assign", "tasks", "users", "invite", "token"],
        *_REPORTS,
    ],
    Role.MOP: ["start", "new", "import", "leads", "lead", "find", "assign", "tasks", "token", *_REPORTS],
    Role.SELLER: ["start", "leads", "lead", "find", "tasks", "token", *_REPORTS],
    Role.FINANCE: ["start", "leads", "lead", "find", "token", *_REPORTS],
}
_TAIL = ["lang", "cancel", "help"]


def command_names(role: Role) -> list[str]:
    return _BY_ROLE.get(role, _COMMON) + _TAIL


def commands_for(role: Role, texts: Texts) -> list[BotCommand]:
    return [BotCommand(command=name, description=texts.t(f"cmd.{name}")) for name in command_names(role)]


async def set_chat_commands(bot: Bot, chat_id: int, role: Role, texts: Texts) -> None:
    await bot.set_my_commands(commands_for(role, texts), scope=BotCommandScopeChat(chat_id=chat_id))
