"""The team: /invite (one-time deep links per role) and /users (the list, one member's panel).

Joining by the link is handled by /start (handlers/start.py). Who may invite, view or change whom is
decided by the repositories (``uow.invites.create``, ``uow.users.team/member/set_role/set_active``);
the permission helpers here only choose which buttons to show.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import BotCommandScopeChat, CallbackQuery, InlineKeyboardMarkup, Message

from bot.commands import set_chat_commands
from bot.config import Settings
from bot.middlewares import WRITES
from bot.presentation.views import cut, esc, format_dt, role_label, user_label
from bot.texts import LANGUAGES, Texts, pick_language, texts_for
from db import permissions
from db.enums import Role
from db.models import Invite, User
from db.permissions import Actor
from db.uow import UnitOfWork
from keyboards.callbacks import InviteCB, MenuAction, MenuCB, UserAction, UserCB, UsersPageCB
from keyboards.people import invite_roles, member_panel, users_page

log = logging.getLogger(__name__)

# Members per /users page, and the longest a member's line may be: 20 lines of at most 190 characters
# plus the header and footer stay below Telegram's 4096 characters (and far below 100 buttons).
PAGE_SIZE = 20
LINE_LIMIT = 190
ROLE_ORDER = (Role.ADMIN, Role.ROP, Role.MOP, Role.SELLER, Role.FINANCE)
# Words accepted after /invite besides the codes and the role names of every language.
_ROLE_ALIASES = {
    "админ": Role.ADMIN,
    "administrator": Role.ADMIN,
    "head": Role.ROP,
    "manager": Role.MOP,
    "sales": Role.SELLER,
    "salesperson": Role.SELLER,
    "продавец": Role.SELLER,
    "финансы": Role.FINANCE,
    "financier": Role.FINANCE,
}


def _norm(word: str) -> str:
    return " ".join(word.casefold().replace("ё", "е").split())


def parse_role(word: str) -> Role | None:
    """``admin``/``rop``/``mop``/``seller``/``finance``, or a role's name in any language (``РОП``…)."""
    key = _norm(word)
    for role in Role:
        if key == role.value or any(key == _norm(table[f"role.{role.value}"]) for table in LANGUAGES.values()):
            return role
    return _ROLE_ALIASES.get(key)


def invitable_roles(actor: Actor) -> list[Role]:
    return [role for role in ROLE_ORDER if permissions.can_invite(actor, role)]


def _role_list(texts: Texts, roles: Sequence[Role]) -> str:
    return ", ".join(f"<code>{role.value}</code> ({role_label(texts, role)})" for role in roles)


def _duration(texts: Texts, ttl: timedelta) -> str:
    seconds = int(ttl.total_seconds())
    if seconds % 3600 == 0:
        return texts.t("people.ttl.hours", n=seconds // 3600)
    if seconds % 60 == 0:
        return texts.t("people.ttl.minutes", n=seconds // 60)
    return texts.t("people.ttl.seconds", n=seconds)


async def invite_text(bot: Bot, invite: Invite, texts: Texts, settings: Settings) -> str:
    me = await bot.me()  # cached by aiogram after the first call
    link = f"https://t.me/{me.username}?start={invite.code}"
    return texts.t(
        "people.invite.link",
        role=role_label(texts, invite.role),
        link=esc(link),
        ttl=_duration(texts, settings.access.invite_ttl),
        expires=format_dt(invite.expires_at, settings.crm.tz),
    )


# ---- rendering ------------------------------------------------------------------------------------


def _order(user: User) -> tuple[bool, int, str, int]:
    rank = ROLE_ORDER.index(Role(user.role)) if user.role in ROLE_ORDER else len(ROLE_ORDER)
    return (not user.is_active, rank, user.full_name.casefold(), user.id)


async def _sorted_team(actor: Actor, uow: UnitOfWork) -> list[User]:
    return sorted(await uow.users.team(actor), key=_order)


def _pages(count: int) -> int:
    return max(1, -(-count // PAGE_SIZE))


async def render_team(
    actor: Actor, uow: UnitOfWork, texts: Texts, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    team = await _sorted_team(actor, uow)
    pages = _pages(len(team))
    page = min(max(page, 0), pages - 1)
    members = team[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    manage = permissions.can_manage_team(actor)
    lines = [texts.t("people.users.header", active=sum(u.is_active for u in team), total=len(team)), ""]
    for number, user in enumerate(members, start=page * PAGE_SIZE + 1):
        marks = []
        if not user.is_active:
            marks.append(texts.t("people.users.mark.inactive"))
        if user.unreachable_since is not None:
            marks.append(texts.t("people.users.mark.unreachable"))
        if user.paused:
            marks.append(texts.t("people.users.mark.paused"))
        line = texts.t(
            "people.users.line",
            n=number,
            name=user_label(user),
            role=role_label(texts, user.role),
            marks="".join(f" · {mark}" for mark in marks),
        )
        lines.append(line if len(line) <= LINE_LIMIT else _cut_name(line, user, texts, number, marks))
    footer = []
    if pages > 1:
        footer.append(texts.t("people.users.page", page=page + 1, pages=pages))
    if manage:
        footer.append(texts.t("people.users.hint.manage"))
    if footer:
        lines += ["", *footer]
    return cut("\n".join(lines)), users_page(members, page, pages, texts, openable=manage)


def _cut_name(line: str, user: User, texts: Texts, number: int, marks: list[str]) -> str:
    """A line over the limit: shorten the name, never the role and the marks."""
    tail = texts.t(
        "people.users.line",
        n=number,
        name="",
        role=role_label(texts, user.role),
        marks="".join(f" · {mark}" for mark in marks),
    )
    return texts.t(
        "people.users.line",
        n=number,
        name=cut(user_label(user), LINE_LIMIT - len(tail)),
        role=role_label(texts, user.role),
        marks="".join(f" · {mark}" for mark in marks),
    )


async def render_member(
    actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, user_id: int
) -> tuple[str, InlineKeyboardMarkup]:
    target = await uow.users.member(actor, user_id)
    team = await _sorted_team(actor, uow)
    index = next((i for i, user in enumerate(team) if user.id == target.id), 0)
    tz = settings.crm.tz
    lines = [
        texts.t(
            "people.user.card",
            name=esc(target.full_name),
            username=f" (@{esc(target.username)})" if target.username else "",
            role=role_label(texts, target.role),
            status=texts.t("people.user.active" if target.is_active else "people.user.inactive"),
            telegram_id=target.telegram_id,
            since=format_dt(target.created_at, tz),
        )
    ]
    if target.unreachable_since is not None:
        lines.append(texts.t("people.user.unreachable", since=format_dt(target.unreachable_since, tz)))
    if target.paused:
        lines.append(texts.t("people.user.paused"))
    config_admin = target.telegram_id in settings.access.admins
    if target.id == actor.id:
        lines.append(texts.t("people.user.yourself"))
    elif config_admin:
        lines.append(texts.t("people.user.config_admin"))
    may_touch = permissions.can_change_role(actor, target, Role(target.role))
    roles = (
        []
        if config_admin
        else [r for r in ROLE_ORDER if r != target.role and permissions.can_change_role(actor, target, r)]
    )
    markup = member_panel(
        target,
        texts,
        roles=roles,
        can_deactivate=may_touch and target.is_active and not config_admin,
        can_activate=may_touch and not target.is_active,
        back_page=index // PAGE_SIZE,
        can_pause=permissions.can_pause(actor, target),
    )
    return cut("\n".join(lines)), markup


# ---- delivery -------------------------------------------------------------------------------------


async def _show(query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Redraw the message the button belongs to (a new message when it is out of reach)."""
    message = query.message
    if isinstance(message, Message):
        await bot.edit_message_text(text, chat_id=message.chat.id, message_id=message.message_id, reply_markup=markup)
    else:
        await bot.send_message(query.from_user.id, text, reply_markup=markup)


async def _send(query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await bot.send_message(chat_id, text, reply_markup=markup)


async def sync_commands(bot: Bot, user: User, settings: Settings) -> None:
    """Give ``user``'s chat the command list of their role, in their language (none when deactivated).

    A failure is logged, not raised: the change itself must still be saved.
    """
    texts = texts_for(pick_language(user.language, None, settings.bot.default_language))
    try:
        if user.is_active:
            await set_chat_commands(bot, user.telegram_id, Role(user.role), texts)
        else:
            await bot.delete_my_commands(scope=BotCommandScopeChat(chat_id=user.telegram_id))
    except TelegramAPIError as exc:
        log.warning("could not update the command list of user %s: %s", user.id, exc)


# ---- /invite ----------------------------------------------------------------------------------------


async def cmd_invite(
    message: Message, command: CommandObject, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, bot: Bot
) -> None:
    if message.chat.type != ChatType.PRIVATE:
        # A link posted in a group could be used by anyone in it.
        await message.answer(texts.t("people.invite.private_only"))
        return
    roles = invitable_roles(actor)
    role = parse_role(command.args) if command.args else None
    if role is None:
        if not roles:
            await message.answer(texts.t("people.invite.nobody"))
            return
        await message.answer(
            texts.t("people.invite.usage", roles=_role_list(texts, roles)), reply_markup=invite_roles(roles, texts)
        )
        return
    invite = await uow.invites.create(actor, role)
    await message.answer(await invite_text(bot, invite, texts, settings))


async def on_menu_invite(query: CallbackQuery, actor: Actor, texts: Texts, bot: Bot) -> None:
    roles = invitable_roles(actor)
    if not roles:
        await query.answer(texts.t("people.invite.nobody"), show_alert=True)
        return
    await _send(query, bot, texts.t("people.invite.choose"), invite_roles(roles, texts))
    await query.answer()


async def on_invite_role(
    query: CallbackQuery,
    callback_data: InviteCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    if query.message is not None and query.message.chat.type != ChatType.PRIVATE:
        await query.answer(texts.t("people.invite.private_only"), show_alert=True)
        return
    invite = await uow.invites.create(actor, callback_data.role)
    # The role buttons become the link: one press, one invite.
    await _show(query, bot, await invite_text(bot, invite, texts, settings), None)
    await query.answer()


# ---- /users -----------------------------------------------------------------------------------------


async def cmd_users(message: Message, actor: Actor, uow: UnitOfWork, texts: Texts) -> None:
    text, markup = await render_team(actor, uow, texts, 0)
    await message.answer(text, reply_markup=markup)


async def on_menu_users(query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, bot: Bot) -> None:
    text, markup = await render_team(actor, uow, texts, 0)
    await _send(query, bot, text, markup)
    await query.answer()


async def on_users_page(
    query: CallbackQuery, callback_data: UsersPageCB, actor: Actor, uow: UnitOfWork, texts: Texts, bot: Bot
) -> None:
    text, markup = await render_team(actor, uow, texts, callback_data.page)
    await _show(query, bot, text, markup)
    await query.answer()


async def on_user_open(
    query: CallbackQuery,
    callback_data: UserCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    text, markup = await render_member(actor, uow, texts, settings, callback_data.user_id)
    await _show(query, bot, text, markup)
    await query.answer()


async def on_user_set_role(
    query: CallbackQuery,
    callback_data: UserCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    if callback_data.role is None:
        await query.answer(texts.t("common.stale_button"), show_alert=True)
        return
    target = await uow.users.set_role(actor, callback_data.user_id, callback_data.role)
    if target.is_active:
        await sync_commands(bot, target, settings)
    text, markup = await render_member(actor, uow, texts, settings, target.id)
    await _show(query, bot, text, markup)
    await query.answer(texts.t("people.done.role", role=role_label(texts, target.role)))


async def on_user_set_active(
    query: CallbackQuery,
    callback_data: UserCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    active = callback_data.action == UserAction.ACTIVATE
    target = await uow.users.set_active(actor, callback_data.user_id, active)
    await sync_commands(bot, target, settings)
    text, markup = await render_member(actor, uow, texts, settings, target.id)
    await _show(query, bot, text, markup)
    await query.answer(texts.t("people.done.activated" if active else "people.done.deactivated"))


async def on_user_set_paused(
    query: CallbackQuery,
    callback_data: UserCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    paused = callback_data.action == UserAction.PAUSE
    target = await uow.users.set_paused(actor, callback_data.user_id, paused)
    text, markup = await render_member(actor, uow, texts, settings, target.id)
    await _show(query, bot, text, markup)
    await query.answer(texts.t("people.done.paused" if paused else "people.done.resumed"))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_invite, Command("invite"), flags=WRITES)
    router.message.register(cmd_users, Command("users"))
    router.callback_query.register(on_menu_invite, MenuCB.filter(F.action == MenuAction.INVITE))
    router.callback_query.register(on_menu_users, MenuCB.filter(F.action == MenuAction.USERS))
    router.callback_query.register(on_invite_role, InviteCB.filter(), flags=WRITES)
    router.callback_query.register(on_users_page, UsersPageCB.filter())
    router.callback_query.register(on_user_open, UserCB.filter(F.action == UserAction.OPEN))
    router.callback_query.register(on_user_set_role, UserCB.filter(F.action == UserAction.SET_ROLE), flags=WRITES)
    router.callback_query.register(
        on_user_set_active, UserCB.filter(F.action.in_({UserAction.DEACTIVATE, UserAction.ACTIVATE})), flags=WRITES
    )
    router.callback_query.register(
        on_user_set_paused, UserCB.filter(F.action.in_({UserAction.PAUSE, UserAction.RESUME})), flags=WRITES
    )
    return router
