"""Who hears about what: domain events become outbox rows that say what happened, not how to say it.

``NotificationRules`` is the unit of work's ``EventSink`` (``bot.factory.create_uow_factory`` installs it
for the bot, the HTTP API and the jobs alike). It runs inside the transaction that made the change, right
before the commit, so a rolled-back change leaves no notification behind and a committed one always has
its rows. It decides the recipients and writes, per recipient, an outbox row whose ``kind`` names the
notification and whose ``payload`` holds its facts (see "Payloads" below); the presentation layer
(``bot.presentation``) turns those into a message when the delivery worker sends the row.

Rules (reference, section «Уведомления», and issue 3):

- new lead → its salesperson; the team chat gets a post (with a "Take" button while unassigned);
- status change → every MOP and ROP, and a post in the team chat;
- reassignment → the new salesperson; the previous one is told the lead was taken off them; the team
  chat's post of a lead that was unassigned is edited to show who has it now;
- comment → the lead's salesperson.

The author of a change never hears about it; deactivated users hear nothing. Every idempotency key is
derived from the event (lead, history row or comment id) and the recipient, so an event cannot be
queued twice for one person.

Payloads (JSON; ``lang`` is the recipient's chosen language, ``None`` for "the default"; ids are
``users.id`` unless named otherwise)::

    lead_new         {"lead_id", "assignee_id", "lang"}
    team_new         {"lead_id", "assignee_id", "lang"} (+ "taken": {"assignee_id", "took"} once assigned)
    team_taken       {"edit_of": <key of the team post>, "lead_id", "lang", "taken": {"assignee_id", "took"}}
    lead_status      {"lead_id", "history_id", "old", "new", "actor_id", "lang"}   (also team_status)
    lead_assigned    {"lead_id", "history_id", "assignee_id", "actor_id", "lang"}
    lead_unassigned  {"lead_id", "history_id", "assignee_id", "actor_id", "lang"}
    lead_comment     {"lead_id", "comment_id", "lang"}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import aliased

from db.enums import OutboxStatus, Role
from db.events import CommentAdded, DomainEvent, LeadCreated, LeadReassigned, LeadStatusChanged
from db.models import Comment, Lead, User
from db.repositories.outbox import OutboxRow
from db.settings import NotificationsSection

if TYPE_CHECKING:
    from db.uow import UnitOfWork

# Outbox ``kind`` values written here (db.reminders adds its own).
KIND_NEW_LEAD = "lead_new"
KIND_ASSIGNED = "lead_assigned"
KIND_UNASSIGNED = "lead_unassigned"
KIND_STATUS = "lead_status"
KIND_COMMENT = "lead_comment"
KIND_TEAM_NEW = "team_new"
KIND_TEAM_STATUS = "team_status"
KIND_TEAM_TAKEN = "team_taken"

STATUS_WATCHERS = frozenset({Role.MOP, Role.ROP})


class NotificationSettings(Protocol):
    @property
    def notifications(self) -> NotificationsSection: ...


@dataclass(slots=True, frozen=True)
class Recipient:
    """A user as the rules need them: whom to address, in which language, whether to at all."""

    id: int
    telegram_id: int
    language: str | None
    is_active: bool


_U = TypeVar("_U", User, Recipient)

_ASSIGNEE = aliased(User, name="assignee")
# A new lead's salesperson, in one read.
_NEW_LEAD = (
    select(Lead.id, Lead.assigned_to_id, _ASSIGNEE.telegram_id, _ASSIGNEE.language, _ASSIGNEE.is_active)
    .outerjoin(_ASSIGNEE, Lead.assigned_to_id == _ASSIGNEE.id)
    .where(Lead.id == bindparam("lead_id"), Lead.deleted_at.is_(None))
)


def team_post_key(lead_id: int) -> str:
    return f"team:new:{lead_id}"


class NotificationRules:
    """The EventSink writing notification facts into the outbox, in the caller's transaction."""

    def __init__(self, settings: NotificationSettings) -> None:
        self.settings = settings

    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None:
        await uow.session.flush()
        for event in events:
            if isinstance(event, LeadCreated):
                await self._lead_created(uow, event)
            elif isinstance(event, LeadStatusChanged):
                await self._status_changed(uow, event)
            elif isinstance(event, LeadReassigned):
                await self._reassigned(uow, event)
            elif isinstance(event, CommentAdded):
                await self._comment_added(uow, event)

    # ---- one method per event ----------------------------------------------------------------------------

    async def _lead_created(self, uow: UnitOfWork, event: LeadCreated) -> None:
        row = (await uow.session.execute(_NEW_LEAD, {"lead_id": event.lead_id})).first()
        if row is None:
            return
        lead_id, assignee_id, telegram_id, language, is_active = row
        assignee = Recipient(assignee_id, telegram_id, language, is_active) if assignee_id is not None else None
        rows = [
            OutboxRow(
                key=f"new:{lead_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_NEW_LEAD,
                payload={"lead_id": lead_id, "assignee_id": assignee_id, "lang": user.language},
            )
            for user in _audience([assignee], event.actor_id)
        ]
        team = self.settings.notifications
        if team.team_chat_id is not None:
            rows.append(
                OutboxRow(
                    key=team_post_key(lead_id),
                    chat_id=team.team_chat_id,
                    thread_id=team.team_thread_id,
                    kind=KIND_TEAM_NEW,
                    payload={"lead_id": lead_id, "assignee_id": assignee_id, "lang": None},
                )
            )
        await uow.outbox.enqueue_many(rows)

    async def _status_changed(self, uow: UnitOfWork, event: LeadStatusChanged) -> None:
        lead = await _lead(uow, event.lead_id)
        if lead is None:
            return
        facts: dict[str, Any] = {
            "lead_id": event.lead_id,
            "history_id": event.history_id,
            "old": str(event.old),
            "new": str(event.new),
            "actor_id": event.actor_id,
        }
        watchers: list[Any] = list(await uow.users.active_with_roles(set(STATUS_WATCHERS)))
        if uow.origin is not None:
            # Moved in a remote CRM: the salesperson did not do it here, so they hear of it too.
            watchers.append(await _user(uow, lead.assigned_to_id))
        for user in _audience(watchers, event.actor_id):
            await uow.outbox.enqueue(
                key=f"status:{event.lead_id}:{event.history_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_STATUS,
                payload={**facts, "lang": user.language},
            )
        team = self.settings.notifications
        if team.team_chat_id is not None:
            await uow.outbox.enqueue(
                key=f"team:status:{event.lead_id}:{event.history_id}",
                chat_id=team.team_chat_id,
                thread_id=team.team_thread_id,
                kind=KIND_TEAM_STATUS,
                payload={**facts, "lang": None},
            )

    async def _reassigned(self, uow: UnitOfWork, event: LeadReassigned) -> None:
        if await _lead(uow, event.lead_id) is None:
            return
        new = await _user(uow, event.new_assignee_id)
        old = await _user(uow, event.old_assignee_id)
        facts: dict[str, Any] = {
            "lead_id": event.lead_id,
            "history_id": event.history_id,
            "assignee_id": event.new_assignee_id,
            "actor_id": event.actor_id,
        }
        for user in _audience([new], event.actor_id):
            await uow.outbox.enqueue(
                key=f"assign:{event.lead_id}:{event.history_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_ASSIGNED,
                payload={**facts, "lang": user.language},
            )
        for user in _audience([old], event.actor_id):
            if new is not None and user.id == new.id:
                continue
            await uow.outbox.enqueue(
                key=f"unassign:{event.lead_id}:{event.history_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_UNASSIGNED,
                payload={**facts, "lang": user.language},
            )
        if event.old_assignee_id is None:
            await self._update_team_post(uow, event)

    async def _update_team_post(self, uow: UnitOfWork, event: LeadReassigned) -> None:
        """The team chat's post of a formerly unassigned lead now shows who has it, without "Take"."""
        post = await uow.outbox.by_key(team_post_key(event.lead_id))
        if post is None:
            return
        took = event.actor_id is not None and event.new_assignee_id is not None
        took = took and event.actor_id == event.new_assignee_id
        taken = {"assignee_id": event.new_assignee_id, "took": took}
        if post.status in (OutboxStatus.PENDING, OutboxStatus.FAILED):
            # Not on Telegram yet: post the up-to-date version instead (the worker reads the payload when it
            # claims the row, in a transaction serialised after this one).
            post.payload = {"lead_id": event.lead_id, "assignee_id": None, "lang": None, "taken": taken}
            return
        await uow.outbox.enqueue(
            key=f"team:taken:{event.lead_id}:{event.history_id}",
            chat_id=post.chat_id,
            thread_id=post.thread_id,
            kind=KIND_TEAM_TAKEN,
            payload={"edit_of": post.idempotency_key, "lead_id": event.lead_id, "lang": None, "taken": taken},
        )

    async def _comment_added(self, uow: UnitOfWork, event: CommentAdded) -> None:
        lead = await _lead(uow, event.lead_id)
        comment = await uow.session.get(Comment, event.comment_id)
        if lead is None or comment is None:
            return
        assignee = await _user(uow, lead.assigned_to_id)
        for user in _audience([assignee], event.actor_id):
            if user.id == comment.created_by_id:
                continue
            await uow.outbox.enqueue(
                key=f"comment:{comment.id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_COMMENT,
                payload={"lead_id": lead.id, "comment_id": comment.id, "lang": user.language},
            )


def _audience(users: Iterable[_U | None], actor_id: int | None) -> list[_U]:
    """Active users other than the author, each once."""
    seen: set[int] = set()
    result: list[_U] = []
    for user in users:
        if user is None or not user.is_active or user.id == actor_id or user.id in seen:
            continue
        seen.add(user.id)
        result.append(user)
    return result


async def _lead(uow: UnitOfWork, lead_id: int) -> Lead | None:
    lead = await uow.session.get(Lead, lead_id)
    return lead if lead is not None and lead.deleted_at is None else None


async def _user(uow: UnitOfWork, user_id: int | None) -> User | None:
    return await uow.session.get(User, user_id) if user_id is not None else None
