"""The main menu: one button per thing this role can do."""

from __future__ import annotations

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.texts import Texts
from db.enums import Role
from keyboards.callbacks import MenuAction, MenuCB

_MENU: dict[Role, list[MenuAction]] = {
    Role.ADMIN: [
        MenuAction.NEW,
        MenuAction.LEADS,
        MenuAction.FIND,
        MenuAction.TASKS,
        MenuAction.USERS,
        MenuAction.INVITE,
        MenuAction.OUTBOX,
    ],
    Role.ROP: [
        MenuAction.NEW,
        MenuAction.LEADS,
        MenuAction.FIND,
        MenuAction.TASKS,
        MenuAction.USERS,
        MenuAction.INVITE,
    ],
    Role.MOP: [MenuAction.NEW, MenuAction.LEADS, MenuAction.FIND, MenuAction.TASKS],
    Role.SELLER: [MenuAction.MY_LEADS, MenuAction.FIND, MenuAction.TASKS],
    Role.FINANCE: [MenuAction.LEADS, MenuAction.FIND],
}


def menu_actions(role: Role) -> list[MenuAction]:
    return _MENU[role]


def main_menu(role: Role, texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for action in menu_actions(role):
        builder.button(text=texts.t(f"menu.{action.value}"), callback_data=MenuCB(action=action))
    builder.adjust(2)
    return builder.as_markup()
