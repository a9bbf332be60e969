"""The report facts kept on each lead (db.lead_facts) equal a recomputation from its history and comments
after a mixed sequence of changes made through the real services: created (by hand, assigned, assigned
automatically), reassigned and reassigned back, taken, taken into work, commented by the assignee and by
others, closed, reopened, refused, moved by a remote CRM, deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import Settings
from db import lead_facts
from db.enums import HistoryAction, LeadStatus
from db.integrations import AMOCRM, apply_remote_status
from db.models import Comment, Lead, LeadHistory, utcnow
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from tests.conftest import Team

Facts = tuple[datetime | None, datetime | None, bool]


def draft(phone: str, assigned_to: int | None = None) -> LeadDraft:
    return LeadDraft(client_name=f"Клиент {phone[-4:]}", phone_number=phone, source="Сайт", assigned_to=assigned_to)


@dataclass
class Sequence:
    """The leads the sequence made, by what happened to them."""

    reassigned_back: int
    taken_refused_reopened: int
    deleted: int
    waited_then_auto: int
    auto_on_creation: int
    remote_moves: int
    assigned_and_answered_at_once: int

    def ids(self) -> list[int]:
        return list(vars(self).values())


async def run_mixed_sequence(uow_factory: UnitOfWorkFactory, team: Team) -> Sequence:
    """The changes, each in a unit of work of its own as the bot and the API make them (``uow_factory``
    assigns by hand; a second factory on the same database assigns automatically)."""
    settings = uow_factory.settings
    automatic = UnitOfWorkFactory(
        uow_factory.database, Settings.model_validate({**settings.model_dump(), "assignment": {"mode": "round_robin"}})
    )
    seller, seller2, rop, mop, admin = (m.user for m in (team.seller, team.seller2, team.rop, team.mop, team.admin))

    async def step(action: Any, factory: UnitOfWorkFactory = uow_factory) -> Any:
        async with factory() as uow:
            result = await action(uow)
            await uow.commit()
            return result

    async def create(uow: Any, phone: str, assignee: int | None = None) -> int:
        lead_id, _ = await uow.leads.add(mop, draft(phone, assignee))
        return int(lead_id)

    # 1: answered, reassigned (the new one answers), closed, reopened, reassigned back: the first
    # assignee's old answers no longer count, so it is unanswered again; then refused by them.
    one = await step(lambda uow: create(uow, "+998901000001", seller.id))
    await step(lambda uow: uow.leads.add_comment(seller, one, "Позвонил"))
    await step(lambda uow: uow.leads.change_status(seller, one, LeadStatus.IN_WORK))
    await step(lambda uow: uow.leads.add_comment(rop, one, "Как дела?"))
    await step(lambda uow: uow.leads.assign(rop, one, seller2.id))
    await step(lambda uow: uow.leads.add_comment(mop, one, "Не ответил"))
    await step(lambda uow: uow.leads.add_comment(seller2, one, "Взял"))
    await step(lambda uow: uow.leads.change_status(seller2, one, LeadStatus.CLOSED))
    await step(lambda uow: uow.leads.change_status(admin, one, LeadStatus.IN_WORK))  # reopened
    await step(lambda uow: uow.leads.assign(rop, one, seller.id))
    back = await step(lambda uow: uow.session.get(Lead, one))
    assert back.first_response_at is None and back.ever_in_work
    await step(lambda uow: uow.leads.change_status(seller, one, LeadStatus.REFUSED, reason="Дорого"))

    # 2: unassigned, commented by a manager, taken by a salesperson, refused straight away (never in
    # work), reopened to «новый» by the head of sales, then taken into work.
    two = await step(lambda uow: create(uow, "+998901000002"))
    await step(lambda uow: uow.leads.add_comment(mop, two, "Перезвонить вечером"))
    await step(lambda uow: uow.leads.take(seller2, two))
    await step(lambda uow: uow.leads.change_status(seller2, two, LeadStatus.REFUSED, reason="Не берёт трубку"))
    refused = await step(lambda uow: uow.session.get(Lead, two))
    assert not refused.ever_in_work and refused.first_response_at is not None
    await step(lambda uow: uow.leads.change_status(rop, two, LeadStatus.NEW))
    await step(lambda uow: uow.leads.change_status(seller2, two, LeadStatus.IN_WORK))

    # 3: assigned, answered, deleted.
    three = await step(lambda uow: create(uow, "+998901000003", seller2.id))
    await step(lambda uow: uow.leads.change_status(seller2, three, LeadStatus.IN_WORK))
    await step(lambda uow: uow.leads.delete(admin, three))

    # 4: left unassigned (manual mode), assigned automatically later, answered by its new assignee.
    four = await step(lambda uow: create(uow, "+998901000004"))
    assert await step(lambda uow: uow.leads.assign_waiting(utcnow()), automatic) == 1
    owner = await step(lambda uow: uow.session.get(Lead, four))
    assert owner.assigned_to_id is not None and owner.assigned_at is not None
    owner_user = seller if owner.assigned_to_id == seller.id else seller2
    await step(lambda uow: uow.leads.add_comment(owner_user, four, "Здравствуйте"))

    # 5: assigned automatically on creation, then moved on by hand.
    five = await step(lambda uow: create(uow, "+998901000005"), automatic)
    picked = await step(lambda uow: uow.session.get(Lead, five))
    assert picked.assigned_to_id is not None and picked.assigned_at == picked.created_at
    await step(
        lambda uow: uow.leads.assign(rop, five, seller.id if picked.assigned_to_id == seller2.id else seller2.id)
    )

    # 6: closed in amoCRM (two moves here, by the integration, not the assignee), then commented.
    six = await step(lambda uow: create(uow, "+998901000006", seller.id))
    assert await step(lambda uow: apply_remote_status(uow, six, LeadStatus.CLOSED, origin=AMOCRM))
    remote = await step(lambda uow: uow.session.get(Lead, six))
    assert remote.ever_in_work and remote.first_response_at is None
    await step(lambda uow: uow.leads.add_comment(seller, six, "Клиент доволен"))

    # 7: reassigned and taken into work by the new assignee in one unit of work (the API's PATCH).
    seven = await step(lambda uow: create(uow, "+998901000007", seller.id))

    async def patch(uow: Any) -> None:
        await uow.leads.assign(rop, seven, seller2.id)
        await uow.leads.change_status(seller2, seven, LeadStatus.IN_WORK)

    await step(patch)
    return Sequence(one, two, three, four, five, six, seven)


def recompute(lead: Lead, history: list[LeadHistory], comments: list[Comment]) -> Facts:
    """The facts from the rows, with the plainest code (the rules of docs/reports.md)."""
    assigned_at = max((h.changed_at for h in history if h.action == HistoryAction.ASSIGNED), default=None)
    since = assigned_at or lead.created_at
    answers = [
        h.changed_at
        for h in history
        if h.action == HistoryAction.STATUS_CHANGED
        and lead.assigned_to_id is not None
        and h.changed_by_id == lead.assigned_to_id
        and h.changed_at >= since
    ] + [
        c.created_at
        for c in comments
        if lead.assigned_to_id is not None and c.created_by_id == lead.assigned_to_id and c.created_at >= since
    ]
    ever_in_work = any(
        h.action == HistoryAction.STATUS_CHANGED and h.new_value == LeadStatus.IN_WORK.value for h in history
    )
    return assigned_at, min(answers, default=None), ever_in_work


async def stored_and_recomputed(uow_factory: UnitOfWorkFactory) -> tuple[dict[int, Facts], dict[int, Facts]]:
    async with uow_factory(read_only=True) as uow:
        leads = (await uow.session.scalars(select(Lead).order_by(Lead.id))).all()
        history = (await uow.session.scalars(select(LeadHistory))).all()
        comments = (await uow.session.scalars(select(Comment))).all()
    stored = {lead.id: (lead.assigned_at, lead.first_response_at, lead.ever_in_work) for lead in leads}
    recomputed = {
        lead.id: recompute(
            lead, [h for h in history if h.lead_id == lead.id], [c for c in comments if c.lead_id == lead.id]
        )
        for lead in leads
    }
    return stored, recomputed


async def snapshot(uow_factory: UnitOfWorkFactory) -> dict[int, tuple[Any, ...]]:
    async with uow_factory(read_only=True) as uow:
        rows = await uow.session.execute(
            select(Lead.id, Lead.updated_at, Lead.assigned_at, Lead.first_response_at, Lead.ever_in_work)
        )
        return {row[0]: tuple(row[1:]) for row in rows}


async def test_kept_facts_equal_a_recomputation_from_the_rows(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    made = await run_mixed_sequence(uow_factory, team)
    stored, recomputed = await stored_and_recomputed(uow_factory)
    assert set(stored) == set(made.ids())
    assert stored == recomputed
    # The sequence reached what the rules must cope with.
    assert [lead_id for lead_id in made.ids() if stored[lead_id][1] is None] == [made.auto_on_creation]
    assert all(stored[lead_id][0] is not None for lead_id in made.ids())
    assert not all(ever for _, _, ever in stored.values()) and any(ever for _, _, ever in stored.values())
    # Recomputing in SQL changes nothing, updated_at included.
    before = await snapshot(uow_factory)
    async with uow_factory() as uow:
        await lead_facts.refresh(uow.session)
        await uow.commit()
    assert await snapshot(uow_factory) == before


async def test_the_facts_answer_the_earliest_and_leave_updated_at_alone(
    uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    """An answer stamped before the stored one replaces it, a later one does not; neither moves
    updated_at by itself (bookkeeping); someone else's or a pre-assignment answer is no answer."""
    async with uow_factory() as uow:
        lead_id, _ = await uow.leads.add(team.mop.user, draft("+998901000008", team.seller.id))
        await uow.commit()
    before = (await snapshot(uow_factory))[lead_id]
    assigned_at = before[1]
    later, latest = assigned_at.replace(year=assigned_at.year + 1), assigned_at.replace(year=assigned_at.year + 2)
    async with uow_factory() as uow:
        await lead_facts.note_answer(uow.session, lead_id, team.seller.id, latest)
        await lead_facts.note_answer(uow.session, lead_id, team.seller.id, later.replace(year=later.year + 5))
        await lead_facts.note_answer(uow.session, lead_id, team.seller2.id, later)
        await lead_facts.note_answer(uow.session, lead_id, team.seller.id, assigned_at.replace(year=2000))
        await uow.commit()
    assert (await snapshot(uow_factory))[lead_id] == (before[0], assigned_at, latest, False)
    async with uow_factory() as uow:
        await lead_facts.note_answer(uow.session, lead_id, team.seller.id, later)
        await uow.commit()
    assert (await snapshot(uow_factory))[lead_id] == (before[0], assigned_at, later, False)


@pytest.mark.parametrize("batch", [1, 500])
async def test_a_refresh_in_batches_syncs_the_loaded_leads(
    uow_factory: UnitOfWorkFactory, team: Team, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lead_facts, "REFRESH_BATCH", batch)
    made = await run_mixed_sequence(uow_factory, team)
    stored, _ = await stored_and_recomputed(uow_factory)
    async with uow_factory() as uow:
        await uow.session.execute(
            Lead.__table__.update().values(assigned_at=None, first_response_at=None, ever_in_work=False)
        )
        loaded = await uow.session.get(Lead, made.remote_moves, populate_existing=True)
        assert loaded is not None and not loaded.ever_in_work
        await lead_facts.refresh(uow.session, made.ids())
        # The loaded lead shows the recomputed values without a reload.
        assert (loaded.assigned_at, loaded.first_response_at, loaded.ever_in_work) == stored[made.remote_moves]
        await uow.commit()
    assert (await stored_and_recomputed(uow_factory))[0] == stored
