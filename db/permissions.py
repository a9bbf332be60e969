"""The reference's permission table, in one place. Repositories call these; interfaces never decide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from db.enums import Role

if TYPE_CHECKING:
    from db.models import User


class Actor(Protocol):
    """Who acts: the sender of an update (``db.rows.UserRow``) or an ORM ``User`` (the API's token holder, jobs)."""

    @property
    def id(self) -> int: ...
    @property
    def telegram_id(self) -> int: ...
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def role(self) -> Role: ...
    @property
    def is_active(self) -> bool: ...
    @property
    def language(self) -> str | None: ...
    @property
    def full_name(self) -> str: ...


class Lead(Protocol):
    """What the rules look at of a lead: an ORM ``Lead`` or a row read for the card."""

    @property
    def assigned_to_id(self) -> int | None: ...


class Target(Protocol):
    """A team member an action is about."""

    @property
    def role(self) -> Role: ...
    @property
    def is_active(self) -> bool: ...


MANAGERS = frozenset({Role.ADMIN, Role.ROP, Role.MOP})
HEADS = frozenset({Role.ADMIN, Role.ROP})
ASSIGNABLE_ROLES = frozenset({Role.SELLER})


def can_pause(actor: Actor, target: Target) -> bool:
    """Put a salesperson on leave (no new leads from automatic assignment), or back: whoever manages the
    team (their panel in /users), for an active salesperson."""
    return can_manage_team(actor) and target.role in ASSIGNABLE_ROLES and target.is_active


def can_create(actor: Actor) -> bool:
    return actor.role in MANAGERS


def can_view_all(actor: Actor) -> bool:
    return actor.role in MANAGERS or actor.role == Role.FINANCE


def can_view_analytics(actor: Actor) -> bool:
    """The reports (/stats, /export, /report, the API's analytics): the heads, МОП and the financier see
    the team's leads, a salesperson their own (``db.analytics.analytics_scope``)."""
    return actor.is_active and (can_view_all(actor) or actor.role == Role.SELLER)


def can_view(actor: Actor, lead: Lead) -> bool:
    return can_view_all(actor) or (actor.role == Role.SELLER and lead.assigned_to_id == actor.id)


def can_update(actor: Actor, lead: Lead) -> bool:
    return actor.role in MANAGERS or (actor.role == Role.SELLER and lead.assigned_to_id == actor.id)


def can_comment(actor: Actor, lead: Lead) -> bool:
    return can_update(actor, lead)


def can_assign(actor: Actor) -> bool:
    return actor.role in MANAGERS


def can_take(actor: Actor, lead: Lead) -> bool:
    """A salesperson may claim an unassigned lead (the team chat's "Take" button)."""
    return actor.role == Role.SELLER and lead.assigned_to_id is None


def can_delete(actor: Actor) -> bool:
    return actor.role in HEADS


def can_reopen(actor: Actor) -> bool:
    return actor.role in HEADS


def can_manage_team(actor: Actor) -> bool:
    return actor.role in HEADS


def can_manage_outbox(actor: Actor) -> bool:
    """The notification queue (/outbox: counts, failures, retry) is for admins."""
    return actor.role == Role.ADMIN


def can_manage_integrations(actor: Actor) -> bool:
    """The CRM integrations (/integrations: queues, failures, retry) are for admins."""
    return actor.role == Role.ADMIN


def can_manage_sheets(actor: Actor) -> bool:
    """The Google Sheets export (/sheets: its state, a full resync) is for admins."""
    return actor.role == Role.ADMIN


def can_invite(actor: Actor, role: Role) -> bool:
    if actor.role == Role.ADMIN:
        return True
    return actor.role == Role.ROP and role != Role.ADMIN


def can_change_role(actor: Actor, target: User, new_role: Role) -> bool:
    if actor.id == target.id:
        return False
    if actor.role == Role.ADMIN:
        return True
    return actor.role == Role.ROP and Role.ADMIN not in (target.role, new_role)
