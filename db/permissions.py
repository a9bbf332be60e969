"""The reference's permission table, in one place. Repositories call these; interfaces never decide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from db.enums import Role

if TYPE_CHECKING:
    from db.models import User


class Lead(Protocol):
    """What the rules look at of a lead: an ORM ``Lead`` or a row read for the card."""

    @property
    def assigned_to_id(self) -> int | None: ...


MANAGERS = frozenset({Role.ADMIN, Role.ROP, Role.MOP})
HEADS = frozenset({Role.ADMIN, Role.ROP})
ASSIGNABLE_ROLES = frozenset({Role.SELLER})


def can_create(actor: User) -> bool:
    return actor.role in MANAGERS


def can_view_all(actor: User) -> bool:
    return actor.role in MANAGERS or actor.role == Role.FINANCE


def can_view(actor: User, lead: Lead) -> bool:
    return can_view_all(actor) or (actor.role == Role.SELLER and lead.assigned_to_id == actor.id)


def can_update(actor: User, lead: Lead) -> bool:
    return actor.role in MANAGERS or (actor.role == Role.SELLER and lead.assigned_to_id == actor.id)


def can_comment(actor: User, lead: Lead) -> bool:
    return can_update(actor, lead)


def can_assign(actor: User) -> bool:
    return actor.role in MANAGERS


def can_take(actor: User, lead: Lead) -> bool:
    """A salesperson may claim an unassigned lead (the team chat's "Take" button)."""
    return actor.role == Role.SELLER and lead.assigned_to_id is None


def can_delete(actor: User) -> bool:
    return actor.role in HEADS


def can_reopen(actor: User) -> bool:
    return actor.role in HEADS


def can_manage_team(actor: User) -> bool:
    return actor.role in HEADS


def can_manage_outbox(actor: User) -> bool:
    """The notification queue (/outbox: counts, failures, retry) is for admins."""
    return actor.role == Role.ADMIN


def can_invite(actor: User, role: Role) -> bool:
    if actor.role == Role.ADMIN:
        return True
    return actor.role == Role.ROP and role != Role.ADMIN


def can_change_role(actor: User, target: User, new_role: Role) -> bool:
    if actor.id == target.id:
        return False
    if actor.role == Role.ADMIN:
        return True
    return actor.role == Role.ROP and Role.ADMIN not in (target.role, new_role)
