"""The reference's permission table through the bot's buttons.

Five roles × view / update (status, edit) / assign / comment / delete, on the salesperson's own lead
and on another salesperson's lead. Each cell checks both sides: the card shows the button exactly
when the role may use it, and pressing the (possibly forged) callback changes the database exactly
then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import pytest
from sqlalchemy import func, select

from db.enums import LeadStatus, Role, StatusCode
from db.models import Comment, Lead
from db.repositories import LeadDraft
from keyboards.callbacks import AssignCB, LeadAction, LeadCB, LeadSourceCB, LeadStatusCB
from tests.conftest import Harness, Member, Team


class Scope(StrEnum):
    ALL = "all"
    OWN = "own"
    NONE = "none"


class Act(StrEnum):
    VIEW = "view"
    STATUS = "status"
    EDIT = "edit"
    ASSIGN = "assign"
    COMMENT = "comment"
    DELETE = "delete"


ALL, OWN, NO = Scope.ALL, Scope.OWN, Scope.NONE
# The reference's table (docs/usage.md "Roles and permissions"); update covers both status and edit.
TABLE: dict[Role, dict[Act, Scope]] = {
    Role.ADMIN: {Act.VIEW: ALL, Act.STATUS: ALL, Act.EDIT: ALL, Act.ASSIGN: ALL, Act.COMMENT: ALL, Act.DELETE: ALL},
    Role.ROP: {Act.VIEW: ALL, Act.STATUS: ALL, Act.EDIT: ALL, Act.ASSIGN: ALL, Act.COMMENT: ALL, Act.DELETE: ALL},
    Role.MOP: {Act.VIEW: ALL, Act.STATUS: ALL, Act.EDIT: ALL, Act.ASSIGN: ALL, Act.COMMENT: ALL, Act.DELETE: NO},
    Role.SELLER: {Act.VIEW: OWN, Act.STATUS: OWN, Act.EDIT: OWN, Act.ASSIGN: NO, Act.COMMENT: OWN, Act.DELETE: NO},
    Role.FINANCE: {Act.VIEW: ALL, Act.STATUS: NO, Act.EDIT: NO, Act.ASSIGN: NO, Act.COMMENT: NO, Act.DELETE: NO},
}

# The card button that leads to each action.
CARD_BUTTON = {
    Act.STATUS: LeadAction.STATUS,
    Act.EDIT: LeadAction.EDIT,
    Act.ASSIGN: LeadAction.ASSIGN,
    Act.COMMENT: LeadAction.COMMENT,
    Act.DELETE: LeadAction.DELETE,
}
ACTION_BUTTONS = set(CARD_BUTTON.values())


@dataclass
class Leads:
    own: int  # assigned to team.seller
    other: int  # assigned to team.seller2


@pytest.fixture
async def leads(harness: Harness, team: Team) -> Leads:
    async with harness.uow_factory() as uow:
        own = await uow.leads.create(
            team.mop.user, LeadDraft("Свой Лид", "+998901234567", "Instagram", assigned_to=team.seller.id)
        )
        other = await uow.leads.create(
            team.mop.user, LeadDraft("Чужой Лид", "+998907654321", "Instagram", assigned_to=team.seller2.id)
        )
        await uow.commit()
        return Leads(own=own.id, other=other.id)


def allowed(role: Role, act: Act, whose: str) -> bool:
    scope = TABLE[role][act]
    return scope is Scope.ALL or (scope is Scope.OWN and whose == "own")


async def state_of(harness: Harness, lead_id: int) -> tuple[object, ...]:
    async with harness.uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None
        comments = await uow.session.scalar(select(func.count()).where(Comment.lead_id == lead_id))
        return (lead.status, lead.source, lead.assigned_to_id, lead.deleted_at is not None, comments)


# Each press returns nothing; the cell then compares the lead before and after.
Press = Callable[[Harness, Team, Member, int], Awaitable[None]]


async def press_view(harness: Harness, team: Team, member: Member, lead_id: int) -> None:
    await harness.click(member, LeadCB(action=LeadAction.OPEN, lead_id=lead_id))


async def press_status(harness: Harness, team: Team, member: Member, lead_id: int) -> None:
    await harness.click(member, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))


async def press_edit(harness: Harness, team: Team, member: Member, lead_id: int) -> None:
    site = harness.settings.crm.sources.index("Сайт")
    await harness.click(member, LeadSourceCB(lead_id=lead_id, index=site))


async def press_assign(harness: Harness, team: Team, member: Member, lead_id: int) -> None:
    async with harness.uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None
        target = team.seller2 if lead.assigned_to_id == team.seller.id else team.seller
    await harness.click(member, AssignCB(lead_id=lead_id, user_id=target.id))


async def press_comment(harness: Harness, team: Team, member: Member, lead_id: int) -> None:
    await harness.click(member, LeadCB(action=LeadAction.COMMENT, lead_id=lead_id))
    await harness.send(member, "Перезвонить завтра")


async def press_delete(harness: Harness, team: Team, member: Member, lead_id: int) -> None:
    await harness.click(member, LeadCB(action=LeadAction.DELETE_CONFIRM, lead_id=lead_id))


PRESS: dict[Act, Press] = {
    Act.VIEW: press_view,
    Act.STATUS: press_status,
    Act.EDIT: press_edit,
    Act.ASSIGN: press_assign,
    Act.COMMENT: press_comment,
    Act.DELETE: press_delete,
}

CELLS = [(role, act, whose) for role in TABLE for act in Act for whose in ("own", "other")]


@pytest.mark.parametrize(("role", "act", "whose"), CELLS, ids=[f"{r}-{a}-{w}" for r, a, w in CELLS])
async def test_permission_cell(harness: Harness, team: Team, leads: Leads, role: Role, act: Act, whose: str) -> None:
    member = team.by_role(role)
    lead_id = leads.own if whose == "own" else leads.other
    may = allowed(role, act, whose)

    # 1. The card shows the button exactly when the action is allowed.
    await harness.send(member, f"/lead {lead_id}")
    card = harness.last_text(member.chat_id)
    shown = {data for _, data in harness.last_buttons(member.chat_id)}
    if act is Act.VIEW:
        assert (f"Лид #{lead_id}" in card) is may, card
    else:
        assert (LeadCB(action=CARD_BUTTON[act], lead_id=lead_id).pack() in shown) is may, shown

    # 2. Pressing the callback, shown or forged, changes the lead exactly when allowed.
    before = await state_of(harness, lead_id)
    harness.session.clear()
    await PRESS[act](harness, team, member, lead_id)
    after = await state_of(harness, lead_id)
    if act is Act.VIEW:
        sent = [m.text for m in harness.session.messages(member.chat_id)]
        assert any(f"Лид #{lead_id}" in text for text in sent) is may, sent
        assert after == before
    else:
        assert (after != before) is may, (before, after)
    if not may:
        assert harness.alerts() or harness.session.messages(member.chat_id), "a refusal must be answered"


@pytest.mark.parametrize("role", list(TABLE))
async def test_financier_sees_no_action_buttons(harness: Harness, team: Team, leads: Leads, role: Role) -> None:
    member = team.by_role(role)
    await harness.send(member, f"/lead {leads.own}")
    actions = {
        LeadCB.unpack(data).action
        for _, data in harness.last_buttons(member.chat_id)
        if data.startswith(f"{LeadCB.__prefix__}:")
    }
    may_act = any(allowed(role, act, "own") for act in CARD_BUTTON)
    assert bool(actions & ACTION_BUTTONS) is may_act


async def test_status_button_follows_the_moves(harness: Harness, team: Team, leads: Leads) -> None:
    """A closed lead: only admin and ROP may reopen it, so only they get the status button."""
    async with harness.uow_factory() as uow:
        await uow.leads.change_status(team.seller.user, leads.own, LeadStatus.IN_WORK)
        await uow.leads.change_status(team.seller.user, leads.own, LeadStatus.CLOSED)
        await uow.commit()
    status_button = LeadCB(action=LeadAction.STATUS, lead_id=leads.own).pack()
    for role, expected in ((Role.ADMIN, True), (Role.ROP, True), (Role.MOP, False), (Role.SELLER, False)):
        member = team.by_role(role)
        await harness.send(member, f"/lead {leads.own}")
        assert (status_button in {d for _, d in harness.last_buttons(member.chat_id)}) is expected, role
