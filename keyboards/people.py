"""Keyboards of the team screens: invite roles, the /users list and one member's panel."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.presentation.views import role_label
from bot.texts import Texts
from db.enums import Role
from db.models import User
from keyboards.callbacks import InviteCB, UserAction, UserCB, UsersPageCB

# A button caption is shown in one line; long names are cut to keep two buttons per row readable.
_BUTTON_NAME_LIMIT = 28


def invite_roles(roles: Sequence[Role], texts: Texts) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    for role in roles:
        builder.button(text=role_label(texts, role), callback_data=InviteCB(role=role))
    builder.adjust(2)
    return builder.as_markup()


def member_button_caption(user: User) -> str:
    name = user.full_name
    if len(name) > _BUTTON_NAME_LIMIT:
        name = name[: _BUTTON_NAME_LIMIT - 1] + "…"
    if not user.is_active:
        return f"⛔ {name}"
    if user.unreachable_since is not None:
        return f"📵 {name}"
    return name


def users_page(
    members: Sequence[User], page: int, pages: int, texts: Texts, *, openable: bool
) -> InlineKeyboardMarkup | None:
    """One button per member on the page (when the viewer may manage them) and the page arrows."""
    builder = InlineKeyboardBuilder()
    rows: list[int] = []
    if openable:
        for user in members:
            builder.button(
                text=member_button_caption(user), callback_data=UserCB(action=UserAction.OPEN, user_id=user.id)
            )
        rows += [2] * ((len(members) + 1) // 2)
    arrows = 0
    if page > 0:
        builder.button(text=texts.t("people.users.prev"), callback_data=UsersPageCB(page=page - 1))
        arrows += 1
    if page < pages - 1:
        builder.button(text=texts.t("people.users.next"), callback_data=UsersPageCB(page=page + 1))
        arrows += 1
    if arrows:
        rows.append(arrows)
    if not rows:
        return None
    builder.adjust(*rows)
    return builder.as_markup()


def member_panel(
    user: User,
    texts: Texts,
    *,
    roles: Sequence[Role],
    can_deactivate: bool,
    can_activate: bool,
    back_page: int,
    can_pause: bool = False,
) -> InlineKeyboardMarkup:
    """Role buttons (only those the viewer may set), access on/off, back to the list page."""
    builder = InlineKeyboardBuilder()
    for role in roles:
        builder.button(
            text=texts.t("people.user.set_role", role=role_label(texts, role)),
            callback_data=UserCB(action=UserAction.SET_ROLE, user_id=user.id, role=role),
        )
    rows = [2] * ((len(roles) + 1) // 2)
    if can_deactivate:
        builder.button(
            text=texts.t("people.user.deactivate"), callback_data=UserCB(action=UserAction.DEACTIVATE, user_id=user.id)
        )
        rows.append(1)
    elif can_activate:
        builder.button(
            text=texts.t("people.user.activate"), callback_data=UserCB(action=UserAction.ACTIVATE, user_id=user.id)
        )
        rows.append(1)
    if can_pause:
        action = UserAction.RESUME if user.paused else UserAction.PAUSE
        caption = "people.user.resume" if user.paused else "people.user.pause"
        builder.button(text=texts.t(caption), callback_data=UserCB(action=action, user_id=user.id))
        rows.append(1)
    builder.button(text=texts.t("people.user.to_list"), callback_data=UsersPageCB(page=back_page))
    rows.append(1)
    builder.adjust(*rows)
    return builder.as_markup()
