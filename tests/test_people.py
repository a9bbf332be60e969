"""People: /invite links, joining by them, /users with the member panel, and who is let in at all."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from aiogram.methods import AnswerCallbackQuery, DeleteMyCommands, SendMessage, SetMyCommands
from aiogram.types import BotCommandScopeChat
from sqlalchemy import func, select, update

from bot.presentation.views import MESSAGE_LIMIT
from db.enums import Role
from db.models import Invite, User, utcnow
from keyboards.callbacks import InviteCB, MenuAction, MenuCB, UserAction, UserCB, UsersPageCB
from tests.conftest import ADMIN_TG, Harness, Member, Team, add_member
from tests.fakes import BOT_USERNAME, tg_user

LINK = re.compile(rf"https://t\.me/{BOT_USERNAME}\?start=([A-Za-z0-9_-]+)")


def invite_code(text: str) -> str:
    match = LINK.search(text)
    assert match, f"no invite link in {text!r}"
    return match.group(1)


async def invites(harness: Harness) -> list[Invite]:
    async with harness.uow_factory() as uow:
        return list((await uow.session.scalars(select(Invite).order_by(Invite.id))).all())


async def user_by_tg(harness: Harness, telegram_id: int) -> User | None:
    async with harness.uow_factory() as uow:
        return await uow.users.by_telegram_id(telegram_id)


async def user_count(harness: Harness) -> int:
    async with harness.uow_factory() as uow:
        return int((await uow.session.scalar(select(func.count(User.id)))) or 0)


async def make_invite(harness: Harness, who: Member, role: str) -> str:
    await harness.send(who, f"/invite {role}")
    return invite_code(harness.last_text(who.chat_id))


def chat_commands(harness: Harness, chat_id: int) -> list[SetMyCommands]:
    return [
        r
        for r in harness.session.of(SetMyCommands)
        if isinstance(r.scope, BotCommandScopeChat) and r.scope.chat_id == chat_id
    ]


# ---- /invite ------------------------------------------------------------------------------------------


async def test_admin_invite_answers_a_one_time_deep_link(harness: Harness, team: Team) -> None:
    await harness.send(team.admin, "/invite seller")
    text = harness.last_text(team.admin.chat_id)
    code = invite_code(text)
    assert "продажник" in text and "48 ч" in text and "одноразов" in text
    [invite] = await invites(harness)
    assert (invite.code, invite.role, invite.created_by_id, invite.used_at) == (code, "seller", team.admin.id, None)
    assert timedelta(hours=47, minutes=59) < invite.expires_at - utcnow() <= timedelta(hours=48)


@pytest.mark.parametrize(
    ("word", "role"),
    [
        ("admin", Role.ADMIN),
        ("ROP", Role.ROP),
        ("РОП", Role.ROP),
        ("мОп", Role.MOP),
        ("продажник", Role.SELLER),
        ("финансист", Role.FINANCE),
        ("salesperson", Role.SELLER),
        ("head of sales", Role.ROP),
    ],
)
async def test_invite_role_may_be_typed_as_code_or_name(harness: Harness, team: Team, word: str, role: Role) -> None:
    await make_invite(harness, team.admin, word)
    assert [i.role for i in await invites(harness)] == [role.value]


@pytest.mark.parametrize("args", ["", " boss", " seller2"])
async def test_missing_or_bad_role_gets_the_usage_line(harness: Harness, team: Team, args: str) -> None:
    await harness.send(team.rop, f"/invite{args}")
    text = harness.last_text(team.rop.chat_id)
    assert "/invite" in text
    for code in ("rop", "mop", "seller", "finance"):
        assert f"<code>{code}</code>" in text
    assert "<code>admin</code>" not in text  # a ROP cannot invite admins, so it is not offered
    assert await invites(harness) == []


async def test_rop_invites_but_not_admins(harness: Harness, team: Team) -> None:
    await make_invite(harness, team.rop, "МОП")
    await harness.send(team.rop, "/invite admin")
    assert "не можете" in harness.last_text(team.rop.chat_id)
    assert [i.role for i in await invites(harness)] == ["mop"]


@pytest.mark.parametrize("who", ["mop", "seller", "finance"])
async def test_others_cannot_invite(harness: Harness, team: Team, who: str) -> None:
    member: Member = getattr(team, who)
    await harness.send(member, "/invite seller")
    assert "не можете" in harness.last_text(member.chat_id)
    await harness.send(member, "/invite")
    assert "администратор и РОП" in harness.last_text(member.chat_id)
    assert await invites(harness) == []


async def test_no_invite_links_in_a_group(harness: Harness, team: Team) -> None:
    await harness.send(team.admin, "/invite seller", chat_id=-100777)
    assert "личном" in harness.last_text(-100777)
    assert LINK.search(harness.last_text(-100777)) is None
    assert await invites(harness) == []


async def test_invite_from_the_menu_offers_role_buttons(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, MenuCB(action=MenuAction.INVITE))
    offered = [data for _text, data in harness.last_buttons(team.rop.chat_id)]
    assert InviteCB(role=Role.SELLER).pack() in offered and InviteCB(role=Role.ADMIN).pack() not in offered
    await harness.press(team.rop, "МОП")
    code = invite_code(harness.last_text(team.rop.chat_id))
    assert [(i.code, i.role) for i in await invites(harness)] == [(code, "mop")]


async def test_forged_invite_button_is_refused(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, InviteCB(role=Role.ADMIN))
    await harness.click(team.seller, InviteCB(role=Role.SELLER))
    assert len(harness.alerts()) == 2 and all("не можете" in a for a in harness.alerts())
    assert await invites(harness) == []


# ---- joining by the link --------------------------------------------------------------------------


async def test_new_person_joins_with_the_role_menu_and_commands(harness: Harness, team: Team) -> None:
    code = await make_invite(harness, team.admin, "mop")
    newcomer = tg_user(5001, "Новичок", "Новиков", username="newbie")
    harness.session.clear()
    await harness.send(newcomer, f"/start {code}")

    texts = [m.text for m in harness.session.messages(5001)]
    assert "Добро пожаловать" in texts[0] and "МОП" in texts[0]
    assert "Новичок" in texts[-1]
    assert MenuCB(action=MenuAction.NEW).pack() in [d for _t, d in harness.last_buttons(5001)]
    [commands] = chat_commands(harness, 5001)
    assert {"new", "assign", "leads"} <= {c.command for c in commands.commands}
    assert "users" not in {c.command for c in commands.commands}

    user = await user_by_tg(harness, 5001)
    assert user is not None and (user.role, user.is_active, user.username) == ("mop", True, "newbie")
    [invite] = await invites(harness)
    assert invite.used_at is not None and invite.used_by_id == user.id

    # A member now: their next message is served, not refused.
    await harness.send(newcomer, "/help")
    assert "/new" in harness.last_text(5001)


async def test_a_code_works_once(harness: Harness, team: Team) -> None:
    code = await make_invite(harness, team.admin, "seller")
    await harness.send(tg_user(5001, "Первый"), f"/start {code}")
    harness.session.clear()
    await harness.send(tg_user(5002, "Второй"), f"/start {code}")
    assert len(harness.session.messages(5002)) == 1
    assert "недействительна" in harness.last_text(5002)
    assert not chat_commands(harness, 5002)
    assert await user_by_tg(harness, 5002) is None
    assert (await user_by_tg(harness, 5001)) is not None


async def test_an_expired_code_is_refused(harness: Harness, team: Team) -> None:
    code = await make_invite(harness, team.admin, "seller")
    async with harness.uow_factory() as uow:
        await uow.session.execute(
            update(Invite).where(Invite.code == code).values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await uow.commit()
    before = await user_count(harness)
    await harness.send(tg_user(5001, "Опоздавший"), f"/start {code}")
    assert "истекла" in harness.last_text(5001)
    assert await user_by_tg(harness, 5001) is None and await user_count(harness) == before
    [invite] = await invites(harness)
    assert invite.used_at is None


async def test_an_active_member_does_not_spend_a_code(harness: Harness, team: Team) -> None:
    code = await make_invite(harness, team.admin, "finance")
    await harness.send(team.seller, f"/start {code}")
    assert "Продажник" in harness.last_text(team.seller.chat_id)  # the ordinary greeting
    seller = await user_by_tg(harness, team.seller.chat_id)
    assert seller is not None and seller.role == "seller"
    [invite] = await invites(harness)
    assert invite.used_at is None
    # ...so the code still works for the person it was meant for.
    await harness.send(tg_user(5001, "Фин2"), f"/start {code}")
    joined = await user_by_tg(harness, 5001)
    assert joined is not None and joined.role == "finance"


async def test_a_deactivated_member_comes_back_with_the_invites_role(harness: Harness, team: Team) -> None:
    code = await make_invite(harness, team.rop, "mop")
    await harness.send(team.inactive, f"/start {code}")
    back = await user_by_tg(harness, team.inactive.chat_id)
    assert back is not None and back.id == team.inactive.id
    assert (back.role, back.is_active) == ("mop", True)
    [commands] = chat_commands(harness, team.inactive.chat_id)
    assert "new" in {c.command for c in commands.commands}
    await harness.send(team.inactive, "/help")
    assert "отключ" not in harness.last_text(team.inactive.chat_id)


# ---- who is let in ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["привет", "/leads", "/users"])
async def test_a_stranger_gets_one_line_with_their_id(harness: Harness, team: Team, text: str) -> None:
    await harness.send(team.stranger, text)
    [answer] = harness.session.messages(team.stranger.id)
    assert "<code>9999</code>" in answer.text and "не в команде" in answer.text


async def test_a_stranger_pressing_a_button_gets_an_alert_with_their_id(harness: Harness, team: Team) -> None:
    await harness.click(team.stranger, UserCB(action=UserAction.DEACTIVATE, user_id=team.seller.id))
    [answer] = harness.session.of(AnswerCallbackQuery)
    assert answer.show_alert and answer.text is not None and "9999" in answer.text and "<code>" not in answer.text
    assert len(answer.text) <= 200
    assert not harness.session.messages()
    seller = await user_by_tg(harness, team.seller.chat_id)
    assert seller is not None and seller.is_active


async def test_a_deactivated_member_is_refused_for_messages_and_buttons(harness: Harness, team: Team) -> None:
    await harness.send(team.inactive, "/users")
    assert "отключён" in harness.last_text(team.inactive.chat_id) and "1007" in harness.last_text(1007)
    await harness.click(team.inactive, MenuCB(action=MenuAction.USERS))
    assert "отключён" in harness.alerts()[-1]
    assert len(harness.session.messages(team.inactive.chat_id)) == 1


async def test_strangers_in_a_group_are_ignored_silently(harness: Harness, team: Team) -> None:
    for text in ("всем привет", "/leads", "/start"):
        await harness.send(team.stranger, text, chat_id=-100555)
        await harness.send(team.inactive, text, chat_id=-100555)
    assert harness.session.requests == []


# ---- /users -----------------------------------------------------------------------------------------


async def test_admin_sees_the_whole_team_with_marks(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        await uow.session.execute(update(User).where(User.id == team.seller2.id).values(unreachable_since=utcnow()))
        await uow.session.execute(update(User).where(User.id == team.mop.id).values(username="mop_<b>"))
        await uow.commit()
    await harness.send(team.admin, "/users")
    text = harness.last_text(team.admin.chat_id)
    lines = text.splitlines()
    for member in (team.admin, team.rop, team.mop, team.seller, team.seller2, team.finance, team.inactive):
        assert member.user.first_name in text
    assert "@mop_&lt;b&gt;" in text  # user-supplied text is escaped
    [inactive_line] = [line for line in lines if "Бывший" in line]
    assert "отключён" in inactive_line and "продажник" in inactive_line
    [unreachable_line] = [line for line in lines if "Второй" in line]
    assert "не получает" in unreachable_line
    assert "не получает" not in next(line for line in lines if "Иванов" in line)
    assert "активных 6 из 7" in text
    opened = {UserCB.unpack(d).user_id for _t, d in harness.last_buttons(team.admin.chat_id) if d.startswith("us:")}
    assert opened == {
        m.id for m in (team.admin, team.rop, team.mop, team.seller, team.seller2, team.finance, team.inactive)
    }


async def test_the_menu_button_shows_the_list(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, MenuCB(action=MenuAction.USERS))
    assert isinstance(harness.last(team.rop.chat_id), SendMessage)
    assert "Команда" in harness.last_text(team.rop.chat_id) and "Фин" in harness.last_text(team.rop.chat_id)


async def test_mop_sees_the_list_read_only(harness: Harness, team: Team) -> None:
    await harness.send(team.mop, "/users")
    assert "Продажник" in harness.last_text(team.mop.chat_id)
    assert not [d for _t, d in harness.last_buttons(team.mop.chat_id) if d.startswith("us:")]
    await harness.click(team.mop, UserCB(action=UserAction.SET_ROLE, user_id=team.seller.id, role=Role.FINANCE))
    assert "не можете" in harness.alerts()[-1]
    seller = await user_by_tg(harness, team.seller.chat_id)
    assert seller is not None and seller.role == "seller"


@pytest.mark.parametrize("who", ["seller", "finance"])
async def test_salesperson_and_financier_cannot_see_the_team(harness: Harness, team: Team, who: str) -> None:
    member: Member = getattr(team, who)
    await harness.send(member, "/users")
    text = harness.last_text(member.chat_id)
    assert "Список команды видят" in text and "Второй" not in text
    await harness.click(member, UserCB(action=UserAction.OPEN, user_id=team.seller2.id))
    assert "Список команды видят" in harness.alerts()[-1]


async def test_admin_changes_a_role_and_their_commands_follow(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        english = await add_member(uow, 3001, Role.SELLER, "Emma", language="en")
        await uow.commit()
    await harness.send(team.admin, "/users")
    await harness.press(team.admin, "Emma")
    panel = harness.last_text(team.admin.chat_id)
    assert "Emma" in panel and "3001" in panel
    captions = [t for t, _d in harness.last_buttons(team.admin.chat_id)]
    assert "→ МОП" in captions and "→ продажник" not in captions and any("Отключить" in c for c in captions)

    await harness.press(team.admin, "→ МОП")
    assert (await user_by_tg(harness, 3001)).role == "mop"  # type: ignore[union-attr]
    assert "МОП" in harness.alerts()[-1]
    assert "Роль: МОП" in harness.last_text(team.admin.chat_id)
    [commands] = chat_commands(harness, 3001)
    by_name = {c.command: c.description for c in commands.commands}
    assert by_name["new"] == "New lead" and "users" not in by_name  # the MOP list, in her language

    await harness.send(english.tg, "/help")
    assert "/new" in harness.last_text(3001)


async def test_deactivate_and_reactivate(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, UserCB(action=UserAction.OPEN, user_id=team.seller.id))
    await harness.press(team.rop, "Отключить")
    seller = await user_by_tg(harness, team.seller.chat_id)
    assert seller is not None and not seller.is_active
    [removed] = harness.session.of(DeleteMyCommands)
    assert isinstance(removed.scope, BotCommandScopeChat) and removed.scope.chat_id == team.seller.chat_id
    assert "отключён" in harness.last_text(team.rop.chat_id)

    await harness.send(team.seller, "/leads")
    assert "отключён" in harness.last_text(team.seller.chat_id)

    await harness.press(team.rop, "Вернуть")
    seller = await user_by_tg(harness, team.seller.chat_id)
    assert seller is not None and seller.is_active and seller.role == "seller"
    assert chat_commands(harness, team.seller.chat_id)


async def test_rop_cannot_touch_admins_or_make_admins(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, UserCB(action=UserAction.OPEN, user_id=team.admin.id))
    assert not [d for _t, d in harness.last_buttons(team.rop.chat_id) if d.startswith("us:")]
    await harness.click(team.rop, UserCB(action=UserAction.OPEN, user_id=team.mop.id))
    assert "→ администратор" not in [t for t, _d in harness.last_buttons(team.rop.chat_id)]

    forged = [
        UserCB(action=UserAction.SET_ROLE, user_id=team.admin.id, role=Role.SELLER),
        UserCB(action=UserAction.DEACTIVATE, user_id=team.admin.id),
        UserCB(action=UserAction.SET_ROLE, user_id=team.mop.id, role=Role.ADMIN),
    ]
    for data in forged:
        await harness.click(team.rop, data)
    assert len(harness.alerts()) == 3
    assert all("не можете" in alert for alert in harness.alerts())
    admin = await user_by_tg(harness, ADMIN_TG)
    mop = await user_by_tg(harness, team.mop.chat_id)
    assert admin is not None and (admin.role, admin.is_active) == ("admin", True)
    assert mop is not None and mop.role == "mop"
    assert not chat_commands(harness, ADMIN_TG) and not harness.session.of(DeleteMyCommands)


async def test_forged_buttons_of_a_salesperson_change_nothing(harness: Harness, team: Team) -> None:
    forged = [
        UserCB(action=UserAction.SET_ROLE, user_id=team.seller.id, role=Role.ADMIN),
        UserCB(action=UserAction.SET_ROLE, user_id=team.seller2.id, role=Role.ROP),
        UserCB(action=UserAction.DEACTIVATE, user_id=team.mop.id),
        UserCB(action=UserAction.ACTIVATE, user_id=team.inactive.id),
    ]
    for data in forged:
        await harness.click(team.seller, data)
    assert len(harness.alerts()) == 4 and all("не можете" in a for a in harness.alerts())
    async with harness.uow_factory() as uow:
        rows = {u.id: (u.role, u.is_active) for u in (await uow.session.scalars(select(User))).all()}
    assert rows[team.seller.id] == ("seller", True)
    assert rows[team.seller2.id] == ("seller", True)
    assert rows[team.mop.id] == ("mop", True)
    assert rows[team.inactive.id] == ("seller", False)


async def test_nobody_changes_themselves_and_config_admins_stay(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        second = await add_member(uow, 2001, Role.ADMIN, "Второй", "Админ")
        await uow.commit()
    await harness.click(team.admin, UserCB(action=UserAction.OPEN, user_id=team.admin.id))
    assert "Это вы" in harness.last_text(team.admin.chat_id)
    await harness.click(team.admin, UserCB(action=UserAction.SET_ROLE, user_id=team.admin.id, role=Role.SELLER))
    await harness.click(second, UserCB(action=UserAction.OPEN, user_id=team.admin.id))
    assert "config" in harness.last_text(second.chat_id)
    assert not [t for t, _d in harness.last_buttons(second.chat_id) if "→" in t or "Отключить" in t]
    await harness.click(second, UserCB(action=UserAction.DEACTIVATE, user_id=team.admin.id))
    await harness.click(second, UserCB(action=UserAction.SET_ROLE, user_id=team.admin.id, role=Role.ROP))
    assert len(harness.alerts()) == 3
    admin = await user_by_tg(harness, ADMIN_TG)
    assert admin is not None and (admin.role, admin.is_active) == ("admin", True)
    # ...while an admin who is not in the config can be managed by another admin.
    await harness.click(team.admin, UserCB(action=UserAction.SET_ROLE, user_id=second.id, role=Role.ROP))
    assert (await user_by_tg(harness, 2001)).role == "rop"  # type: ignore[union-attr]


async def test_a_big_team_is_paged_under_the_message_limit(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        for n in range(130):
            await add_member(uow, 10_000 + n, Role.SELLER, f"Сотрудник{n:03d}" + "Я" * 100, "Фамилия" * 18)
        await uow.commit()
    await harness.send(team.admin, "/users")
    seen: set[int] = set()
    for page in range(8):
        text = harness.last_text(team.admin.chat_id)
        assert len(text) <= MESSAGE_LIMIT
        buttons = harness.last_buttons(team.admin.chat_id)
        assert len(buttons) <= 100
        seen |= {UserCB.unpack(d).user_id for _t, d in buttons if d.startswith("us:")}
        if page < 6:
            assert f"Страница {page + 1} из 7" in text
            await harness.press(team.admin, "Далее")
    assert len(seen) == 137
    assert UsersPageCB(page=5).pack() in [d for _t, d in harness.last_buttons(team.admin.chat_id)]
    assert "Далее" not in " ".join(t for t, _d in harness.last_buttons(team.admin.chat_id))


async def test_the_panel_goes_back_to_its_page(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        for n in range(30):
            await add_member(uow, 10_000 + n, Role.SELLER, f"Я{n:02d}")
        await uow.commit()
    await harness.send(team.admin, "/users")
    await harness.press(team.admin, "Далее")
    await harness.press(team.admin, "Я29")
    assert "Я29" in harness.last_text(team.admin.chat_id)
    await harness.press(team.admin, "К списку")
    assert "Страница 2 из 2" in harness.last_text(team.admin.chat_id)
