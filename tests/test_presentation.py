"""The seam between the core and the presentation: the core queues facts, the worker renders them at send time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.config import Settings
from bot.delivery import DeliveryWorker, VirtualClock
from bot.factory import create_dispatcher
from bot.presentation.presenter import GONE, Presenter, RenderError
from db.engine import Database
from db.enums import LeadStatus, OutboxStatus
from db.models import OutboxMessage
from db.notifications import KIND_NEW_LEAD, KIND_STATUS, KIND_TEAM_NEW
from db.repositories import LeadDraft
from db.repositories.leads import LeadChanges
from db.uow import UnitOfWorkFactory
from tests.conftest import Harness, Team
from tests.fakes import RecordingSession, make_bot
from tests.test_notifications import TEAM_CHAT, new_lead, outbox_rows, with_team_chat

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def team_harness(settings: Settings, database: Database) -> Harness:
    team_settings = with_team_chat(settings)
    dp = create_dispatcher(team_settings, database)
    session = RecordingSession()
    return Harness(bot=make_bot(session), session=session, dp=dp, settings=team_settings, uow_factory=dp["uow_factory"])


async def deliver(harness: Harness) -> None:
    worker = DeliveryWorker(harness.bot, harness.uow_factory, harness.settings.notifications, clock=VirtualClock())
    await worker.run(until_idle=True)


async def by_key(factory: UnitOfWorkFactory, key: str) -> OutboxMessage:
    async with factory() as uow:
        row = await uow.session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
    assert row is not None
    return row


def test_the_core_imports_no_interface() -> None:
    """``db/`` (the core) imports nothing from the bot, the handlers, the keyboards or the HTTP API."""
    interfaces = ("bot", "handlers", "keyboards", "api")
    offenders = []
    for path in sorted((ROOT / "db").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in interfaces]
    assert offenders == []


async def test_outbox_rows_hold_facts_not_text(team_harness: Harness, team: Team) -> None:
    factory = team_harness.uow_factory
    async with factory() as uow:
        await uow.users.set_language(await uow.users.get(team.admin.user, team.rop.id), "en")
        await uow.commit()
    lead_id = await new_lead(factory, team.mop, assignee=team.seller)
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.commit()
        history_id = (await uow.leads.history(team.admin.user, lead_id))[-1].id

    rows = {row.idempotency_key: row for row in await outbox_rows(factory)}
    assert rows[f"new:{lead_id}:{team.seller.id}"].kind == KIND_NEW_LEAD
    assert rows[f"new:{lead_id}:{team.seller.id}"].payload == {
        "lead_id": lead_id,
        "assignee_id": team.seller.id,
        "lang": "ru",  # the recipient's own choice; the team chat's is None (the default language)
    }
    assert rows[f"team:new:{lead_id}"].kind == KIND_TEAM_NEW
    assert rows[f"team:new:{lead_id}"].payload == {"lead_id": lead_id, "assignee_id": team.seller.id, "lang": None}
    status = rows[f"status:{lead_id}:{history_id}:{team.rop.id}"]
    assert status.kind == KIND_STATUS
    assert status.payload == {
        "lead_id": lead_id,
        "history_id": history_id,
        "old": LeadStatus.NEW.value,
        "new": LeadStatus.IN_WORK.value,
        "actor_id": team.seller.id,
        "lang": "en",
    }
    assert not any("text" in row.payload for row in rows.values())


async def test_the_worker_renders_the_lead_as_it_is_when_sent(harness: Harness, team: Team) -> None:
    """The event's facts are those of the moment it happened; the lead is described as it is now."""
    factory = harness.uow_factory
    lead_id = await new_lead(factory, team.mop, assignee=team.seller, name="Старое Имя")
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.leads.update(team.rop.user, lead_id, LeadChanges(client_name="Новое Имя"))
        await uow.commit()

    await deliver(harness)

    [new] = harness.session.messages(team.seller.chat_id)
    assert f"Новый лид #{lead_id}" in new.text
    assert "Новое Имя" in new.text and "Старое Имя" not in new.text
    # Taken into work meanwhile: the new-lead message no longer offers "Take into work".
    assert new.reply_markup is not None
    assert [button.text for line in new.reply_markup.inline_keyboard for button in line] == ["📇 Открыть карточку"]
    [move] = harness.session.messages(team.rop.chat_id)
    assert "новый → <b>в работе</b>" in move.text and "Новое Имя" in move.text


async def test_a_notification_about_a_lead_deleted_before_sending_is_not_sent(harness: Harness, team: Team) -> None:
    factory = harness.uow_factory
    lead_id = await new_lead(factory, team.mop, assignee=team.seller)
    async with factory() as uow:
        await uow.leads.delete(team.admin.user, lead_id)
        await uow.commit()

    await deliver(harness)

    assert harness.session.messages(team.seller.chat_id) == []
    row = await by_key(factory, f"new:{lead_id}:{team.seller.id}")
    assert (row.status, row.last_error) == (OutboxStatus.FAILED, GONE)


async def test_a_payload_with_its_text_is_sent_as_it_is_and_an_unknown_kind_is_an_error(
    uow_factory: UnitOfWorkFactory,
) -> None:
    presenter = Presenter(uow_factory.settings)
    plain = presenter.plain({"text": "<b>ready</b>", "reply_markup": None})
    assert plain is not None and (plain.text, plain.reply_markup) == ("<b>ready</b>", None)
    async with uow_factory(read_only=True) as uow:
        try:
            await presenter.render(uow, "no_such_kind", {"lead_id": 1}, user_id=None)
        except RenderError as exc:
            assert "no_such_kind" in str(exc)
        else:
            raise AssertionError("an unknown kind rendered")


async def test_the_team_post_taken_before_it_went_out_is_posted_taken(team_harness: Harness, team: Team) -> None:
    factory = team_harness.uow_factory
    async with factory() as uow:
        lead = await uow.leads.create(
            team.rop.user, LeadDraft(client_name="Быстрый", phone_number="+998905550011", source="Сайт")
        )
        await uow.commit()
        lead_id = lead.id
    async with factory() as uow:
        await uow.leads.take(team.seller.user, lead_id)
        await uow.commit()

    post = await by_key(factory, f"team:new:{lead_id}")
    assert post.payload["taken"] == {"assignee_id": team.seller.id, "took": True}
    await deliver(team_harness)

    [sent] = team_harness.session.messages(TEAM_CHAT)
    assert "Быстрый" in sent.text and "Продажник Иванов" in sent.text
    assert sent.reply_markup is None
