from __future__ import annotations

from aiogram.methods import SetMyCommands
from sqlalchemy import update

from db.models import User, utcnow
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


async def test_lang_switches_the_users_language_for_good(harness: Harness, team: Team) -> None:
    await harness.send(team.seller, "/lang")
    await harness.press(team.seller, "English")
    assert harness.last_text(team.seller.chat_id) == "Language: English."
    async with harness.uow_factory() as uow:
        stored = await uow.session.get(User, team.seller.id)
        assert stored is not None and stored.language == "en"
    await harness.send(team.seller, "/help")  # a later update speaks it, whatever Telegram's language says
    assert team.seller.tg.language_code == "ru"
    assert harness.last_text(team.seller.chat_id).startswith("Commands:")


async def test_a_renamed_and_unreachable_user_is_brought_up_to_date_by_their_next_message(
    harness: Harness, team: Team
) -> None:
    async with harness.uow_factory() as uow:
        await uow.session.execute(update(User).where(User.id == team.seller.id).values(unreachable_since=utcnow()))
        await uow.commit()
    renamed = tg_user(team.seller.chat_id, "Новое <Имя>", "Фамилия", "new_handle")
    await harness.send(renamed, "/start")
    assert "Новое &lt;Имя&gt;" in harness.last_text(team.seller.chat_id)  # this very update greets the new name
    async with harness.uow_factory() as uow:
        stored = await uow.session.get(User, team.seller.id)
        assert stored is not None
        assert (stored.first_name, stored.last_name, stored.username) == ("Новое <Имя>", "Фамилия", "new_handle")
        assert stored.unreachable_since is None
