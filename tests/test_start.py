from __future__ import annotations

from aiogram.methods import SetMyCommands

from tests.conftest import Harness, Team
from tests.fakes import tg_user


async def test_config_admin_is_recognised_on_start(harness: Harness) -> None:
    admin = tg_user(1001, "Boss")
    await harness.send(admin, "/start")
    text = harness.last_text(1001)
    assert "Boss" in text and "администратор" in text
    commands = harness.session.of(SetMyCommands)[-1]
    assert {c.command for c in commands.commands} >= {"new", "users", "invite"}
    async with harness.uow_factory() as uow:
        user = await uow.users.by_telegram_id(1001)
        assert user is not None and user.role == "admin"


async def test_stranger_gets_one_polite_line_with_their_id(harness: Harness, team: Team) -> None:
    for text in ("/start", "/leads", "hello", "/new"):
        harness.session.clear()
        await harness.send(team.stranger, text)
        assert len(harness.session.messages()) == 1
        assert "9999" in harness.last_text(9999)


async def test_deactivated_user_is_refused(harness: Harness, team: Team) -> None:
    await harness.send(team.inactive, "/leads")
    assert "отключ" in harness.last_text(team.inactive.chat_id)


async def test_seller_menu_matches_role(harness: Harness, team: Team) -> None:
    await harness.send(team.seller, "/start")
    commands = {c.command for c in harness.session.of(SetMyCommands)[-1].commands}
    assert "new" not in commands and "users" not in commands
    assert {"leads", "find", "lead"} <= commands
