from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from bot.config import Settings
from db.engine import open_database
from db.enums import HistoryAction, LeadStatus, OutboxStatus
from db.errors import DuplicateLead, Forbidden, InvalidInput, InvalidTransition, NotFound
from db.models import OutboxMessage
from db.notifications import NotificationRules
from db.repositories import LeadDraft, LeadFilter
from db.uow import UnitOfWorkFactory
from tests.conftest import Team
from tests.rendering import text_of


def draft(phone: str = "+998901234567", **kw: object) -> LeadDraft:
    base: dict[str, object] = {"client_name": "Иван Петров", "phone_number": phone, "source": "Instagram"}
    base.update(kw)
    return LeadDraft(**base)  # type: ignore[arg-type]


async def test_create_writes_history_and_normalises_phone(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        lead = await uow.leads.create(team.mop.user, draft("90 123 45 67", assigned_to=team.seller.id, budget=5e4))
        await uow.commit()
    async with uow_factory() as uow:
        history = await uow.leads.history(team.admin.user, lead.id)
    assert lead.phone_number == "+998901234567"
    assert lead.status == LeadStatus.NEW
    assert [h.action for h in history] == [HistoryAction.CREATED, HistoryAction.ASSIGNED]
    assert history[1].new_value == "Продажник Иванов"


async def test_duplicate_phone_is_refused_with_existing_id(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        first = await uow.leads.create(team.mop.user, draft())
        await uow.commit()
    async with uow_factory() as uow:
        with pytest.raises(DuplicateLead) as info:
            await uow.leads.create(team.rop.user, draft("998901234567"))
    assert info.value.existing_lead_id == first.id


async def test_racing_creations_give_one_lead(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async def attempt() -> str:
        async with uow_factory() as uow:
            try:
                await uow.leads.create(team.mop.user, draft())
                await uow.commit()
            except DuplicateLead:
                return "duplicate"
            return "created"

    results = await asyncio.gather(*(attempt() for _ in range(5)))
    assert results.count("created") == 1
    async with uow_factory() as uow:
        page = await uow.leads.page(team.admin.user, LeadFilter(), limit=10)
    assert len(page.items) == 1


async def test_a_refused_duplicate_leaves_the_transaction_usable(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    # No SAVEPOINT around the insert: the refused row is all that is undone.
    async with uow_factory() as uow:
        first = await uow.leads.create(team.mop.user, draft())
        with pytest.raises(DuplicateLead) as info:
            await uow.leads.create(team.rop.user, draft("+998 90 123 45 67", client_name="Дубль"))
        assert info.value.existing_lead_id == first.id
        second = await uow.leads.create(team.rop.user, draft("+998907654321", assigned_to=team.seller.id))
        await uow.commit()
    async with uow_factory() as uow:
        page = await uow.leads.page(team.admin.user, LeadFilter(), limit=10)
        assert [row.id for row in page.items] == [second.id, first.id]
        assert [h.action for h in await uow.leads.history(team.admin.user, first.id)] == [HistoryAction.CREATED]
        rows = (await uow.session.execute(text("select count(*) from lead_history"))).scalar_one()
    assert rows == 3  # created, created + assigned: nothing from the refused one


async def test_a_created_lead_is_the_sessions_own_with_its_people(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        lead = await uow.leads.create(team.mop.user, draft(assigned_to=team.seller.id, notes="звонить после 18"))
        # Nothing is left to write back, and loading it again gives the same object, fully loaded.
        assert not uow.session.dirty and not uow.session.new
        assert await uow.leads.get(team.admin.user, lead.id) is lead
        assert lead.assigned_to is not None and lead.assigned_to.id == team.seller.id
        assert lead.created_by.id == team.mop.id
        assert (lead.search_name, lead.reminder_count, lead.deleted_at) == ("иван петров", 0, None)
        card = await uow.leads.card(team.admin.user, lead.id)
        assert (card.lead.notes, card.lead.assigned_to_id, card.history_total) == (
            "звонить после 18",
            team.seller.id,
            2,
        )


async def test_a_refused_second_create_leaves_only_the_first_leads_rows(settings: Settings, team: Team) -> None:
    # A second create of the same phone in the same unit is refused and writes nothing of its own.
    restarted_db = open_database(settings.database.url)
    factory = UnitOfWorkFactory(restarted_db, settings, NotificationRules(settings))
    try:
        async with factory() as uow:
            lead = await uow.leads.create(team.mop.user, draft(assigned_to=team.seller.id))
            with pytest.raises(DuplicateLead) as info:
                await uow.leads.create(team.rop.user, draft())
            assert info.value.existing_lead_id == lead.id
            await uow.commit()
        async with factory() as uow:
            history = await uow.leads.history(team.admin.user, lead.id)
            outbox = (await uow.session.scalars(select(OutboxMessage))).all()
        texts = [await text_of(factory, row) for row in outbox]
    finally:
        await restarted_db.dispose()
    assert [(h.action, h.new_value) for h in history] == [
        (HistoryAction.CREATED, LeadStatus.NEW.value),
        (HistoryAction.ASSIGNED, "Продажник Иванов"),
    ]
    assert [(row.idempotency_key, row.chat_id, row.status) for row in outbox] == [
        (f"new:{lead.id}:{team.seller.id}", team.seller.chat_id, OutboxStatus.PENDING)
    ]
    assert f"#{lead.id}" in texts[0]


async def test_soft_delete_frees_the_phone_and_keeps_history(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        lead = await uow.leads.create(team.mop.user, draft())
        await uow.leads.delete(team.rop.user, lead.id)
        again = await uow.leads.create(team.mop.user, draft())
        await uow.commit()
    assert again.id != lead.id
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.leads.get(team.admin.user, lead.id)
        rows = (
            (
                await uow.session.execute(
                    text("select action from lead_history where lead_id = :id"),
                    {"id": lead.id},
                )
            )
            .scalars()
            .all()
        )
    assert "deleted" in rows


async def test_status_moves_and_reopen(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        lead = await uow.leads.create(team.mop.user, draft(assigned_to=team.seller.id))
        with pytest.raises(InvalidTransition) as info:
            await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.CLOSED)
        assert set(info.value.allowed) == {LeadStatus.IN_WORK, LeadStatus.REFUSED}
        with pytest.raises(InvalidInput):
            await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.REFUSED, reason="  ")
        await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.REFUSED, reason="дорого")
        with pytest.raises(Forbidden):
            await uow.leads.change_status(team.mop.user, lead.id, LeadStatus.IN_WORK)
        reopened = await uow.leads.change_status(team.rop.user, lead.id, LeadStatus.IN_WORK)
        assert reopened.refusal_reason is None
        with pytest.raises(Forbidden):
            await uow.leads.change_status(team.seller2.user, lead.id, LeadStatus.CLOSED)
        closed = await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.CLOSED)
        assert closed.closing_date is not None
