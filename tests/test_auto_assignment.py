"""Automatic assignment: new unassigned leads from every channel (the bot's /new, the API, the webhook, an
import) go round in turn, or to the least loaded."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select, update

from bot.assignment_jobs import ASSIGNMENT_JOB, AssignmentJobs, schedule
from bot.config import Settings
from bot.presentation.cards import render_card
from bot.texts import texts_for
from db.enums import HistoryAction, LeadStatus, Role
from db.errors import DuplicateLead
from db.imports import LeadImporter
from db.models import Lead, LeadHistory, OutboxMessage, User
from db.notifications import NotificationRules
from db.repositories import LeadDraft
from db.settings import AssignmentSection
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import UserAction, UserCB
from tests.api_support import WEBHOOK_SECRET, bearer
from tests.conftest import ADMIN_TG, Harness, Member, Team, add_member
from tests.import_support import csv_bytes


@pytest.fixture
def assignment() -> dict[str, object]:
    return {"mode": "round_robin"}


@pytest.fixture
def settings(db_url: str, assignment: dict[str, object]) -> Settings:
    return Settings.model_validate(
        {
            "bot": {"token": "42:TEST-TOKEN"},
            "database": {"url": db_url},
            "access": {"admins": [ADMIN_TG]},
            "assignment": assignment,
        }
    )


@pytest.fixture
async def sellers(team: Team, uow_factory: UnitOfWorkFactory) -> list[Member]:
    """Five salespeople, the last on leave (paused)."""
    async with uow_factory() as uow:
        extra = [
            await add_member(uow, 2001, Role.SELLER, "Третий", "Продажник"),
            await add_member(uow, 2002, Role.SELLER, "Четвёртый", "Продажник"),
            await add_member(uow, 2003, Role.SELLER, "Пятый", "Отпускник"),
        ]
        extra[-1].user.paused = True
        await uow.commit()
    return [team.seller, team.seller2, *extra]


def phone(n: int) -> str:
    return f"+99890{n:07d}"


async def leads_in_order(factory: UnitOfWorkFactory) -> list[Lead]:
    async with factory(read_only=True) as uow:
        return list((await uow.session.scalars(select(Lead).order_by(Lead.id))).all())


async def via_bot(harness: Harness, member: Member, n: int) -> None:
    await harness.send(member, "/new")
    await harness.send(member, f"Клиент {n}")
    await harness.send(member, phone(n))
    await harness.press(member, "Instagram")
    await harness.press(member, "Пропустить")  # budget
    await harness.press(member, "Пропустить")  # notes
    await harness.press(member, "Пропустить")  # salesperson: nobody, so automatic
    await harness.press(member, "Создать")


async def via_repository(factory: UnitOfWorkFactory, author: Member, n: int) -> None:
    async with factory() as uow:
        await uow.leads.create(author.user, LeadDraft(client_name=f"Клиент {n}", phone_number=phone(n), source="Сайт"))
        await uow.commit()


async def via_import(factory: UnitOfWorkFactory, author: Member, n: int) -> None:
    data = csv_bytes([["Имя", "Телефон", "Источник"], [f"Клиент {n}", phone(n), "Google Ads"]])
    report = await LeadImporter(factory).run(author.user, data, "leads.csv", summary=summary)
    assert report.created == 1


def summary(user: User, count: int, actor: object) -> dict[str, object]:
    return {"text": f"{count}", "reply_markup": None}


async def test_round_robin_spreads_100_leads_from_four_channels_in_turn(
    harness: Harness,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    team: Team,
    sellers: list[Member],
) -> None:
    active = [m.id for m in sellers[:4]]
    for n in range(100):
        channel = n % 4
        if channel == 0:
            await via_bot(harness, team.mop, n)
        elif channel == 1:
            body = {"client_name": f"Клиент {n}", "phone_number": phone(n), "source": "Facebook"}
            response = await client.post("/api/leads/create", json=body, headers=bearer(tokens["rop"]))
            assert response.status_code == 201, response.text
        elif channel == 2:
            body = {"client_name": f"Клиент {n}", "phone_number": phone(n)}
            response = await client.post(
                "/api/leads/webhook/Сайт", json=body, headers={"X-Webhook-Secret": WEBHOOK_SECRET}
            )
            assert response.status_code == 201, response.text
        else:
            await via_import(harness.uow_factory, team.admin, n)

    leads = await leads_in_order(harness.uow_factory)
    assert len(leads) == 100
    assignees = [lead.assigned_to_id for lead in leads]
    assert Counter(assignees) == {user_id: 25 for user_id in active}
    # In turn: each lead goes to the salesperson after the previous one's.
    assert assignees == [active[i % 4] for i in range(100)]
    assert sellers[4].id not in assignees

    async with harness.uow_factory(read_only=True) as uow:
        auto = (
            await uow.session.scalars(
                select(LeadHistory).where(
                    LeadHistory.action == HistoryAction.ASSIGNED, LeadHistory.changed_by_id.is_(None)
                )
            )
        ).all()
        notified = (await uow.session.scalars(select(OutboxMessage).where(OutboxMessage.user_id.in_(active)))).all()
    # Every assignment was automatic, in the history with no author, and its salesperson was told.
    assert len(auto) == 100
    assert Counter(row.user_id for row in notified) == {user_id: 25 for user_id in active}
    # An import tells its salesperson in one summary; every other channel by the new-lead message.
    assert Counter(row.kind for row in notified) == {"lead_new": 75, "import_summary": 25}


async def test_the_turn_survives_a_restart(uow_factory: UnitOfWorkFactory, settings: Settings, team: Team) -> None:
    await via_repository(uow_factory, team.admin, 1)
    restarted = UnitOfWorkFactory(uow_factory.database, settings)
    await via_repository(restarted, team.admin, 2)
    await via_repository(restarted, team.admin, 3)
    assert [lead.assigned_to_id for lead in await leads_in_order(uow_factory)] == [
        team.seller.id,
        team.seller2.id,
        team.seller.id,
    ]


async def test_an_explicit_salesperson_is_kept(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        lead = await uow.leads.create(
            team.admin.user,
            LeadDraft(client_name="Клиент", phone_number=phone(1), source="Сайт", assigned_to=team.seller2.id),
        )
        await uow.commit()
    assert lead.assigned_to_id == team.seller2.id
    await via_repository(uow_factory, team.admin, 2)
    # The explicit assignment did not move the turn: the first automatic one starts at the beginning.
    assert (await leads_in_order(uow_factory))[1].assigned_to_id == team.seller.id


async def test_a_duplicate_phone_does_not_move_the_turn(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    await via_repository(uow_factory, team.admin, 1)
    with pytest.raises(DuplicateLead):
        await via_repository(uow_factory, team.admin, 1)
    await via_repository(uow_factory, team.admin, 2)
    assert [lead.assigned_to_id for lead in await leads_in_order(uow_factory)] == [team.seller.id, team.seller2.id]


@pytest.mark.parametrize("assignment", [{"mode": "least_loaded"}])
async def test_least_loaded_keeps_open_counts_within_one(
    uow_factory: UnitOfWorkFactory, team: Team, sellers: list[Member]
) -> None:
    active = [m.id for m in sellers[:4]]
    # A head start: the first salesperson has 6 open leads, the second 3 (one more is closed: not open).
    async with uow_factory() as uow:
        for n in range(10):
            owner = team.seller if n < 6 else team.seller2
            await uow.leads.create(
                team.admin.user,
                LeadDraft(client_name=f"Старый {n}", phone_number=phone(900 + n), source="Сайт", assigned_to=owner.id),
            )
        await uow.commit()
        await uow.session.execute(update(Lead).where(Lead.phone_number == phone(909)).values(status=LeadStatus.CLOSED))
        await uow.commit()

    for n in range(41):
        await via_repository(uow_factory, team.admin, n)

    counts = Counter(
        lead.assigned_to_id
        for lead in await leads_in_order(uow_factory)
        if lead.status in (LeadStatus.NEW, LeadStatus.IN_WORK)
    )
    assert set(counts) == set(active)
    assert sum(counts.values()) == 50
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("assignment", [{"mode": "round_robin", "sources": {"instagram": [1005, 2002]}}])
async def test_a_source_with_its_own_list(uow_factory: UnitOfWorkFactory, team: Team, sellers: list[Member]) -> None:
    async with uow_factory() as uow:
        for n in range(4):
            await uow.leads.create(
                team.admin.user, LeadDraft(client_name=f"К {n}", phone_number=phone(n), source="Instagram")
            )
        await uow.leads.create(team.admin.user, LeadDraft(client_name="К 9", phone_number=phone(9), source="Сайт"))
        await uow.commit()
    leads = await leads_in_order(uow_factory)
    assert [lead.assigned_to_id for lead in leads] == [
        team.seller2.id,
        sellers[3].id,
        team.seller2.id,
        sellers[3].id,
        team.seller.id,  # another source: the whole team, its own turn
    ]


@pytest.mark.parametrize(
    "assignment", [{"mode": "round_robin", "working_hours_only": True, "working_hours": "09:00-18:00"}]
)
async def test_outside_working_hours_leads_wait_for_a_manager(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        # 02:00 in Tashkent (UTC+5) is night; 10:00 is working time.
        assert await uow.assigner.pick("Сайт", now=datetime(2026, 11, 30, 21, 0, tzinfo=UTC)) is None
        picked = await uow.assigner.pick("Сайт", now=datetime(2026, 11, 30, 5, 0, tzinfo=UTC))
        assert picked is not None and picked.id == team.seller.id


@pytest.mark.parametrize("assignment", [{"mode": "manual"}])
async def test_manual_mode_leaves_new_leads_unassigned(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    await via_repository(uow_factory, team.admin, 1)
    assert (await leads_in_order(uow_factory))[0].assigned_to_id is None


async def test_pause_from_the_users_card(harness: Harness, team: Team, sellers: list[Member]) -> None:
    await harness.send(team.rop, "/users")
    await harness.press(team.rop, "Иванов")
    await harness.press(team.rop, "Пауза")
    assert "На паузе" in harness.last_text(team.rop.chat_id)
    async with harness.uow_factory(read_only=True) as uow:
        assert (await uow.session.get(User, team.seller.id)).paused is True  # type: ignore[union-attr]

    await via_repository(harness.uow_factory, team.admin, 1)
    assert (await leads_in_order(harness.uow_factory))[0].assigned_to_id == team.seller2.id

    await harness.send(team.rop, "/users")
    assert "🌴 в отпуске" in harness.last_text(team.rop.chat_id)
    await harness.press(team.rop, "Иванов")
    await harness.press(team.rop, "Снять с паузы")
    async with harness.uow_factory(read_only=True) as uow:
        assert (await uow.session.get(User, team.seller.id)).paused is False  # type: ignore[union-attr]


async def test_only_salespeople_can_be_paused_and_only_by_the_heads(harness: Harness, team: Team) -> None:
    await harness.click(team.admin, UserCB(action=UserAction.OPEN, user_id=team.mop.id))
    assert not any("Пауза" in text for text, _ in harness.last_buttons(team.admin.chat_id))
    for member in (team.seller2, team.mop):
        await harness.click(member, UserCB(action=UserAction.PAUSE, user_id=team.seller.id))
    async with harness.uow_factory(read_only=True) as uow:
        assert (await uow.session.get(User, team.seller.id)).paused is False  # type: ignore[union-attr]


async def test_concurrent_leads_still_take_turns(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    """Units of work at once (two instances alike): the cursor row is locked, so nobody is picked twice."""
    await asyncio.gather(*(via_repository(uow_factory, team.admin, n) for n in range(20)))
    counts = Counter(lead.assigned_to_id for lead in await leads_in_order(uow_factory))
    assert counts == {team.seller.id: 10, team.seller2.id: 10}


@pytest.mark.parametrize(
    "assignment", [{"mode": "round_robin", "working_hours_only": True, "working_hours": "09:00-18:00"}]
)
async def test_waiting_leads_are_handed_out_when_assignment_can_happen_again(
    uow_factory: UnitOfWorkFactory, settings: Settings, team: Team
) -> None:
    # Nobody available when they arrive (both salespeople on leave): they wait unassigned.
    async with uow_factory() as uow:
        for member in (team.seller, team.seller2):
            await uow.users.set_paused(team.admin.user, member.id, True)
        await uow.commit()
    for n in range(3):
        await via_repository(uow_factory, team.admin, n)
    assert [lead.assigned_to_id for lead in await leads_in_order(uow_factory)] == [None, None, None]
    async with uow_factory() as uow:
        for member in (team.seller, team.seller2):
            await uow.users.set_paused(team.admin.user, member.id, False)
        await uow.commit()

    jobs = AssignmentJobs(UnitOfWorkFactory(uow_factory.database, settings, NotificationRules(settings)))
    night, morning = datetime(2026, 11, 30, 21, 0, tzinfo=UTC), datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    assert await jobs.assign_waiting(night) == 0
    assert await jobs.assign_waiting(morning) == 3
    assert await jobs.assign_waiting(morning) == 0

    leads = await leads_in_order(uow_factory)
    assert [lead.assigned_to_id for lead in leads] == [team.seller.id, team.seller2.id, team.seller.id]
    async with uow_factory(read_only=True) as uow:
        history = (
            await uow.session.scalars(select(LeadHistory).where(LeadHistory.action == HistoryAction.ASSIGNED))
        ).all()
        outbox = (await uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    assert [(h.lead_id, h.changed_by_id) for h in history] == [(lead.id, None) for lead in leads]
    assert [(m.user_id, m.kind) for m in outbox] == [
        (team.seller.id, "lead_assigned"),
        (team.seller2.id, "lead_assigned"),
        (team.seller.id, "lead_assigned"),
    ]


@pytest.mark.parametrize("mode", ["manual", "round_robin"])
def test_the_job_is_scheduled_only_with_automatic_assignment(
    settings: Settings, uow_factory: UnitOfWorkFactory, mode: str
) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    scheduler = AsyncIOScheduler()
    configured = settings.model_copy(update={"assignment": AssignmentSection(mode=mode)})  # type: ignore[arg-type]
    schedule(scheduler, configured, uow_factory)
    assert [job.id for job in scheduler.get_jobs()] == ([] if mode == "manual" else [ASSIGNMENT_JOB])


async def test_the_card_says_the_assignment_was_automatic(
    uow_factory: UnitOfWorkFactory, settings: Settings, team: Team
) -> None:
    await via_repository(uow_factory, team.admin, 1)
    async with uow_factory() as uow:
        [lead] = (await uow.session.scalars(select(Lead))).all()
        # A manager's reassignment afterwards is theirs, not automatic.
        await uow.leads.assign(team.rop.user, lead.id, team.seller2.id)
        await uow.commit()
    async with uow_factory(read_only=True) as uow:
        card = await uow.leads.card(team.admin.user, lead.id)
    ru = render_card(card, texts_for("ru"), settings.crm).text
    assert "система: продажник назначен автоматически: Продажник Иванов" in ru
    assert "Роп Петров: продажник Продажник Иванов → Второй Продажник" in ru
    en = render_card(card, texts_for("en"), settings.crm).text
    assert "system: salesperson assigned automatically: Продажник Иванов" in en
