"""Domain events a unit of work collects; notifications are derived from them in the same transaction.

Each event carries the facts it is about, the history row or comment it wrote included, so whatever
reacts to it (notifications, integrations) never has to guess which row a change made.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.enums import LeadStatus


@dataclass(frozen=True, slots=True)
class LeadCreated:
    lead_id: int
    actor_id: int | None
    history_id: int


@dataclass(frozen=True, slots=True)
class LeadStatusChanged:
    lead_id: int
    actor_id: int | None
    old: LeadStatus
    new: LeadStatus
    history_id: int


@dataclass(frozen=True, slots=True)
class LeadReassigned:
    lead_id: int
    actor_id: int | None
    old_assignee_id: int | None
    new_assignee_id: int | None
    history_id: int


@dataclass(frozen=True, slots=True)
class CommentAdded:
    lead_id: int
    actor_id: int | None
    comment_id: int


@dataclass(frozen=True, slots=True)
class LeadUpdated:
    """Fields of the lead changed (name, phone, budget...): ``fields`` names them; ``history_id`` is the
    last history row the change wrote."""

    lead_id: int
    actor_id: int | None
    fields: tuple[str, ...]
    history_id: int


DomainEvent = LeadCreated | LeadStatusChanged | LeadReassigned | CommentAdded | LeadUpdated
