"""Small read-only row types for what the bot shows on every update: the card and its people.

They carry the attribute names of the ORM models they mirror (``lead.assigned_to.full_name``,
``comment.created_by``), so rendering and ``db.permissions`` take either; unlike ORM objects they cost
nothing to build and cannot be changed by accident. ``db.reader`` fills them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from db.enums import LeadStatus, Role
from db.models import person_name


@dataclass(slots=True, frozen=True)
class UserRow:
    """A team member as read at the start of an update: who acts (``db.permissions.Actor``).

    Every update reads its sender; an ORM ``User`` for it cost more than the rest of reading a card.
    Being frozen, it cannot be changed in the hope of a write: ``UserRepository`` writes changes
    to the acting user itself and hands back the new row.
    """

    # In the order of the columns of ``users`` (``db.repositories.users.USER_COLUMNS``).
    id: int
    telegram_id: int
    first_name: str
    last_name: str | None
    username: str | None
    role: Role
    is_active: bool
    language: str | None
    unreachable_since: datetime | None
    created_at: datetime
    paused: bool = False

    @property
    def full_name(self) -> str:
        return person_name(self.first_name, self.last_name, self.id)


@dataclass(slots=True, frozen=True)
class PersonRow:
    id: int
    first_name: str
    last_name: str | None
    username: str | None
    # As ``User.full_name``; made once, since a card shows it on every line of the person's.
    full_name: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "full_name", person_name(self.first_name, self.last_name, self.id))

    @staticmethod
    def of(
        user_id: int | None, first_name: str | None, last_name: str | None, username: str | None
    ) -> PersonRow | None:
        """From an outer join's columns: None when there is nobody."""
        if user_id is None:
            return None
        return _person(user_id, first_name or "", last_name, username)


# A card names the same few people on most of its lines, and a team is small: rows are immutable, so
# one per distinct set of values is shared (a renamed person simply gets a new one).
_person = lru_cache(maxsize=1024)(PersonRow)


@dataclass(slots=True, frozen=True)
class LeadCardRow:
    """Every column of a live lead the card shows, with its salesperson and creator."""

    id: int
    client_name: str
    phone_number: str
    status: LeadStatus
    source: str
    budget: float | None
    notes: str | None
    assigned_to_id: int | None
    created_by_id: int
    created_at: datetime
    updated_at: datetime
    closing_date: date | None
    refusal_reason: str | None
    assigned_to: PersonRow | None
    created_by: PersonRow | None

    @staticmethod
    def of(row: Sequence[Any]) -> LeadCardRow:
        (
            lead_id,
            client_name,
            phone_number,
            status,
            source,
            budget,
            notes,
            assigned_to_id,
            created_by_id,
            created_at,
            updated_at,
            closing_date,
            refusal_reason,
            *people,
        ) = row
        return LeadCardRow(
            id=lead_id,
            client_name=client_name,
            phone_number=phone_number,
            status=LeadStatus(status),
            source=source,
            budget=budget,
            notes=notes,
            assigned_to_id=assigned_to_id,
            created_by_id=created_by_id,
            created_at=created_at,
            updated_at=updated_at,
            closing_date=closing_date,
            refusal_reason=refusal_reason,
            assigned_to=PersonRow.of(assigned_to_id, *people[0:3]),
            created_by=PersonRow.of(created_by_id, *people[3:6]),
        )


@dataclass(slots=True, frozen=True)
class CommentRow:
    id: int
    text: str
    created_at: datetime
    created_by: PersonRow | None


@dataclass(slots=True, frozen=True)
class HistoryRow:
    id: int
    action: str
    field: str | None
    old_value: str | None
    new_value: str | None
    changed_at: datetime
    changed_by: PersonRow | None


@dataclass(slots=True, frozen=True)
class FollowUpRow:
    id: int
    text: str
    due_at: datetime


@dataclass(slots=True, frozen=True)
class MetaOriginRow:
    """The Meta lead-ads delivery a lead came from (``db.models.MetaLeadgen``): its ids as Meta sent them."""

    leadgen_id: str
    form_id: str | None
    ad_id: str | None
    page_id: str | None
    platform: str | None


@dataclass(slots=True)
class LeadCardData:
    """What the card shows: the lead, its latest comments and history (oldest first), open follow-ups
    (soonest first), each list with its total; ``meta`` when the lead came from a Meta lead ad; ``links``
    its remote ids by integration (``amocrm`` → ``"30000001"``), the linked ones only."""

    lead: LeadCardRow
    comments: list[CommentRow] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    followups: list[FollowUpRow] = field(default_factory=list)
    comments_total: int = 0
    history_total: int = 0
    followups_total: int = 0
    meta: MetaOriginRow | None = None
    links: dict[str, str] = field(default_factory=dict)
