"""The reference's permission table, through the service layer (the same calls the bot, the API and
jobs make): five roles × create / view / update / status / assign / comment / delete, on the
salesperson's own lead and on another salesperson's lead."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from db.enums import LeadStatus, Role
from db.errors import Forbidden
from db.models import Lead, User
from db.repositories import LeadChanges, LeadDraft, LeadFilter
from db.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import Team

Y, N = True, False
# role: (create, view own, view other, update own, update other, assign, comment own, comment other, delete)
TABLE: dict[Role, tuple[bool, ...]] = {
    Role.ADMIN: (Y, Y, Y, Y, Y, Y, Y, Y, Y),
    Role.ROP: (Y, Y, Y, Y, Y, Y, Y, Y, Y),
    Role.MOP: (Y, Y, Y, Y, Y, Y, Y, Y, N),
    Role.SELLER: (N, Y, N, Y, N, N, Y, N, N),
    Role.FINANCE: (N, Y, Y, N, N, N, N, N, N),
}
COLUMNS = (
    "create",
    "view_own",
    "view_other",
    "update_own",
    "update_other",
    "assign",
    "comment_own",
    "comment_other",
    "delete",
)

Action = Callable[[UnitOfWork, User, Lead, Team], Awaitable[Any]]


async def _create(uow: UnitOfWork, actor: User, lead: Lead, team: Team) -> Any:
    return await uow.leads.create(actor, LeadDraft("Новый Клиент", "+998935550011", "Сайт"))


async def _view(uow: UnitOfWork, actor: User, lead: Lead, team: Team) -> Any:
    return await uow.leads.get_detail(actor, lead.id)


async def _update(uow: UnitOfWork, actor: User, lead: Lead, team: Team) -> Any:
    await uow.leads.update(actor, lead.id, LeadChanges(notes="новая заметка"))
    return await uow.leads.change_status(actor, lead.id, LeadStatus.IN_WORK)


async def _assign(uow: UnitOfWork, actor: User, lead: Lead, team: Team) -> Any:
    return await uow.leads.assign(actor, lead.id, team.seller2.id)


async def _comment(uow: UnitOfWork, actor: User, lead: Lead, team: Team) -> Any:
    return await uow.leads.add_comment(actor, lead.id, "позвонил")


async def _delete(uow: UnitOfWork, actor: User, lead: Lead, team: Team) -> Any:
    return await uow.leads.delete(actor, lead.id)


CASES: list[tuple[str, Action, str]] = [
    ("create", _create, "own"),
    ("view_own", _view, "own"),
    ("view_other", _view, "other"),
    ("update_own", _update, "own"),
    ("update_other", _update, "other"),
    ("assign", _assign, "own"),
    ("comment_own", _comment, "own"),
    ("comment_other", _comment, "other"),
    ("delete", _delete, "own"),
]


@pytest.mark.parametrize("role", list(TABLE), ids=lambda r: r.value)
@pytest.mark.parametrize(("column", "action", "whose"), CASES, ids=[c[0] for c in CASES])
async def test_permission_table(
    uow_factory: UnitOfWorkFactory, team: Team, role: Role, column: str, action: Action, whose: str
) -> None:
    async with uow_factory() as uow:
        own = await uow.leads.create(
            team.rop.user, LeadDraft("Свой", "+998901110011", "Instagram", assigned_to=team.seller.id)
        )
        other = await uow.leads.create(
            team.rop.user, LeadDraft("Чужой", "+998901110022", "Facebook", assigned_to=team.seller2.id)
        )
        await uow.commit()
    # For the seller, "own" is the lead assigned to them; others act on the same two leads.
    actor = team.by_role(role).user
    lead = own if whose == "own" else other
    allowed = TABLE[role][COLUMNS.index(column)]
    async with uow_factory() as uow:
        if allowed:
            await action(uow, actor, lead, team)
            await uow.commit()
        else:
            with pytest.raises(Forbidden):
                await action(uow, actor, lead, team)


async def test_seller_lists_only_own_and_finance_lists_all(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        for i, seller in enumerate((team.seller, team.seller2, team.seller, None)):
            await uow.leads.create(
                team.mop.user,
                LeadDraft(f"Клиент {i}", f"+99890111002{i}", "Сайт", assigned_to=seller.id if seller else None),
            )
        await uow.commit()
    async with uow_factory() as uow:
        own = await uow.leads.page(team.seller.user, LeadFilter(), limit=10)
        forged = await uow.leads.page(team.seller.user, LeadFilter(assigned_to=team.seller2.id), limit=10)
        everything = await uow.leads.page(team.finance.user, LeadFilter(), limit=10)
    assert {lead.assigned_to_id for lead in own.items} == {team.seller.id} and len(own.items) == 2
    assert forged.items == []
    assert len(everything.items) == 4


async def test_seller_may_take_only_unassigned(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    async with uow_factory() as uow:
        free = await uow.leads.create(team.mop.user, LeadDraft("Ничей", "+998901110031", "Сайт"))
        taken = await uow.leads.create(
            team.mop.user, LeadDraft("Чей-то", "+998901110032", "Сайт", assigned_to=team.seller2.id)
        )
        await uow.commit()
    async with uow_factory() as uow:
        lead = await uow.leads.take(team.seller.user, free.id)
        assert lead.assigned_to_id == team.seller.id
        with pytest.raises(Forbidden):
            await uow.leads.take(team.seller.user, taken.id)
        with pytest.raises(Forbidden):
            await uow.leads.take(team.mop.user, free.id)
