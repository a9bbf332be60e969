"""Who hears about what: domain events become outbox rows, rendered in each recipient's language.

``OutboxNotifier`` is the unit of work's ``EventSink`` (``bot.factory.create_uow_factory`` installs it for
the bot, the HTTP API and the jobs alike). It runs inside the transaction that made the change, right
before the commit, so a rolled-back change leaves no notification behind and a committed one always
has its rows. The delivery worker (``bot.delivery``) sends them later.

Rules (reference, section «Уведомления», and issue 3):

- new lead → its salesperson; the team chat gets a post (with a "Take" button while unassigned);
- status change → every MOP and ROP, and a post in the team chat;
- reassignment → the new salesperson; the previous one is told the lead was taken off them; the team
  chat's post of a lead that was unassigned is edited to show who has it now;
- comment → the lead's salesperson.

The author of a change never hears about it; deactivated users hear nothing. Every idempotency key is
derived from the event (lead, history row or comment id) and the recipient, so an event cannot be
queued twice for one person.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy import bindparam, select
from sqlalchemy.orm import aliased

from bot.config import Settings
from bot.texts import Texts, pick_language, texts_for
from bot.views import cut, esc, format_money, format_phone_html, status_label, user_label
from db.enums import LeadStatus, OutboxStatus, Role, StatusCode
from db.events import CommentAdded, DomainEvent, LeadCreated, LeadReassigned, LeadStatusChanged
from db.models import Comment, Lead, User
from db.permissions import Actor
from db.repositories.outbox import OutboxRow
from db.rows import PersonRow
from keyboards.callbacks import LeadAction, LeadCB, LeadStatusCB

if TYPE_CHECKING:
    from db.uow import UnitOfWork

# Outbox ``kind`` values written here (others — reminders, digests — add their own).
KIND_NEW_LEAD = "lead_new"
KIND_ASSIGNED = "lead_assigned"
KIND_UNASSIGNED = "lead_unassigned"
KIND_STATUS = "lead_status"
KIND_COMMENT = "lead_comment"
KIND_TEAM_NEW = "team_new"
KIND_TEAM_STATUS = "team_status"
KIND_TEAM_TAKEN = "team_taken"

STATUS_WATCHERS = frozenset({Role.MOP, Role.ROP})
COMMENT_PREVIEW = 600


@dataclass(slots=True, frozen=True)
class LeadFacts:
    """What a notification shows of a lead (the attribute names of ``Lead``), read as a plain row."""

    id: int
    client_name: str
    phone_number: str
    status: LeadStatus
    source: str
    budget: float | None
    assigned_to_id: int | None
    refusal_reason: str | None


@dataclass(slots=True, frozen=True)
class Recipient(PersonRow):
    """A user as the notifier needs them: whom to address, in which language, whether to at all."""

    telegram_id: int
    language: str | None
    is_active: bool


_U = TypeVar("_U", User, Recipient)

_ASSIGNEE = aliased(User, name="assignee")
# A new lead with its salesperson, in one read.
_NEW_LEAD = (
    select(
        Lead.id,
        Lead.client_name,
        Lead.phone_number,
        Lead.status,
        Lead.source,
        Lead.budget,
        Lead.assigned_to_id,
        Lead.refusal_reason,
        _ASSIGNEE.first_name,
        _ASSIGNEE.last_name,
        _ASSIGNEE.username,
        _ASSIGNEE.telegram_id,
        _ASSIGNEE.language,
        _ASSIGNEE.is_active,
    )
    .outerjoin(_ASSIGNEE, Lead.assigned_to_id == _ASSIGNEE.id)
    .where(Lead.id == bindparam("lead_id"), Lead.deleted_at.is_(None))
)


def _new_lead(row: Sequence[Any]) -> tuple[LeadFacts, Recipient | None]:
    lead = LeadFacts(row[0], row[1], row[2], LeadStatus(row[3]), row[4], row[5], row[6], row[7])
    if lead.assigned_to_id is None:
        return lead, None
    first_name, last_name, username, telegram_id, language, is_active = row[8:14]
    return lead, Recipient(lead.assigned_to_id, first_name or "", last_name, username, telegram_id, language, is_active)


def _button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _column(*buttons: InlineKeyboardButton) -> InlineKeyboardMarkup:
    """One button a row. Built directly: a keyboard builder deep-copies its rows, a cost paid per recipient."""
    return InlineKeyboardMarkup(inline_keyboard=[[button] for button in buttons])


def team_post_key(lead_id: int) -> str:
    return f"team:new:{lead_id}"


def message_payload(text: str, markup: InlineKeyboardMarkup | None = None) -> dict[str, Any]:
    """The outbox payload of a plain message (see bot.delivery for the format)."""
    return {
        "text": cut(text),
        "reply_markup": markup.model_dump(mode="json", exclude_none=True) if markup is not None else None,
    }


def edit_payload(edit_of: str, text: str, markup: InlineKeyboardMarkup | None = None) -> dict[str, Any]:
    """Edit the message another outbox row (``edit_of`` = its idempotency key) has sent."""
    return {"edit_of": edit_of, **message_payload(text, markup)}


class OutboxNotifier:
    """The EventSink writing notifications into the outbox, in the caller's transaction."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # ---- the sink --------------------------------------------------------------------------------------

    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None:
        await uow.session.flush()
        for event in events:
            if isinstance(event, LeadCreated):
                await self._lead_created(uow, event)
            elif isinstance(event, LeadStatusChanged):
                await self._status_changed(uow, event, event.history_id)
            elif isinstance(event, LeadReassigned):
                await self._reassigned(uow, event, event.history_id)
            elif isinstance(event, CommentAdded):
                await self._comment_added(uow, event)

    # ---- one method per event ----------------------------------------------------------------------------

    async def _lead_created(self, uow: UnitOfWork, event: LeadCreated) -> None:
        row = (await uow.session.execute(_NEW_LEAD, {"lead_id": event.lead_id})).first()
        if row is None:
            return
        lead, assignee = _new_lead(row)
        rows = []
        for user in self._audience([assignee], event.actor_id):
            texts = self._texts(user)
            rows.append(
                OutboxRow(
                    key=f"new:{lead.id}:{user.id}",
                    chat_id=user.telegram_id,
                    user_id=user.id,
                    kind=KIND_NEW_LEAD,
                    payload=message_payload(
                        self.lead_text(texts, lead, "notify.new_lead", assignee=assignee),
                        self.lead_buttons(texts, lead, user),
                    ),
                )
            )
        team = self.settings.notifications
        if team.team_chat_id is not None:
            texts = self._team_texts()
            rows.append(
                OutboxRow(
                    key=team_post_key(lead.id),
                    chat_id=team.team_chat_id,
                    thread_id=team.team_thread_id,
                    kind=KIND_TEAM_NEW,
                    payload=message_payload(*self.team_post(texts, lead, assignee)),
                )
            )
        await uow.outbox.enqueue_many(rows)

    async def _status_changed(self, uow: UnitOfWork, event: LeadStatusChanged, history_id: int) -> None:
        lead = await self._lead(uow, event.lead_id)
        if lead is None:
            return
        actor = await self._user(uow, event.actor_id)
        watchers = await uow.users.active_with_roles(set(STATUS_WATCHERS))
        for user in self._audience(watchers, event.actor_id):
            texts = self._texts(user)
            await uow.outbox.enqueue(
                key=f"status:{lead.id}:{history_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_STATUS,
                payload=message_payload(
                    self.status_text(texts, lead, event.old, event.new, actor), self.open_button(texts, lead)
                ),
            )
        team = self.settings.notifications
        if team.team_chat_id is not None:
            texts = self._team_texts()
            await uow.outbox.enqueue(
                key=f"team:status:{lead.id}:{history_id}",
                chat_id=team.team_chat_id,
                thread_id=team.team_thread_id,
                kind=KIND_TEAM_STATUS,
                payload=message_payload(self.status_text(texts, lead, event.old, event.new, actor)),
            )

    async def _reassigned(self, uow: UnitOfWork, event: LeadReassigned, history_id: int) -> None:
        lead = await self._lead(uow, event.lead_id)
        if lead is None:
            return
        actor = await self._user(uow, event.actor_id)
        new = await self._user(uow, event.new_assignee_id)
        old = await self._user(uow, event.old_assignee_id)
        for user in self._audience([new], event.actor_id):
            texts = self._texts(user)
            text = self.lead_text(texts, lead, "notify.assigned", assignee=new)
            text += "\n" + texts.t("notify.by_line", actor=self._actor_label(texts, actor))
            await uow.outbox.enqueue(
                key=f"assign:{lead.id}:{history_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_ASSIGNED,
                payload=message_payload(text, self.lead_buttons(texts, lead, user)),
            )
        for user in self._audience([old], event.actor_id):
            if new is not None and user.id == new.id:
                continue
            texts = self._texts(user)
            text = texts.t(
                "notify.unassigned",
                lead_id=lead.id,
                client=esc(lead.client_name),
                assignee=user_label(new, texts),
                actor=self._actor_label(texts, actor),
            )
            await uow.outbox.enqueue(
                key=f"unassign:{lead.id}:{history_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_UNASSIGNED,
                payload=message_payload(text),
            )
        if event.old_assignee_id is None:
            await self._update_team_post(uow, lead, new, actor, history_id)

    async def _update_team_post(
        self, uow: UnitOfWork, lead: Lead, assignee: User | None, actor: Actor | None, history_id: int
    ) -> None:
        """The team chat's post of a formerly unassigned lead now shows who has it, without "Take"."""
        post = await uow.outbox.by_key(team_post_key(lead.id))
        if post is None:
            return
        texts = self._team_texts()
        text, _ = self.team_post(texts, lead, None)
        took = actor is not None and assignee is not None and actor.id == assignee.id
        text += "\n\n" + texts.t("notify.team.taken" if took else "notify.team.assigned", assignee=user_label(assignee))
        if post.status in (OutboxStatus.PENDING, OutboxStatus.FAILED):
            # Not on Telegram yet: post the up-to-date version instead (the worker reads the payload when it
            # claims the row, in a transaction serialised after this one).
            post.payload = message_payload(text)
            return
        await uow.outbox.enqueue(
            key=f"team:taken:{lead.id}:{history_id}",
            chat_id=post.chat_id,
            thread_id=post.thread_id,
            kind=KIND_TEAM_TAKEN,
            payload=edit_payload(post.idempotency_key, text),
        )

    async def _comment_added(self, uow: UnitOfWork, event: CommentAdded) -> None:
        lead = await self._lead(uow, event.lead_id)
        comment = await uow.session.get(Comment, event.comment_id)
        if lead is None or comment is None:
            return
        assignee = await self._user(uow, lead.assigned_to_id)
        author = await self._user(uow, comment.created_by_id)
        for user in self._audience([assignee], event.actor_id):
            if user.id == comment.created_by_id:
                continue
            texts = self._texts(user)
            text = texts.t(
                "notify.comment",
                lead_id=lead.id,
                client=esc(lead.client_name),
                actor=self._actor_label(texts, author),
                text=esc(cut(comment.text, COMMENT_PREVIEW)),
            )
            await uow.outbox.enqueue(
                key=f"comment:{comment.id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_COMMENT,
                payload=message_payload(text, self.open_button(texts, lead)),
            )

    # ---- rendering (public: the reminders and the team handler reuse them) ------------------------------

    def lead_text(
        self, texts: Texts, lead: Lead | LeadFacts, header_key: str, *, assignee: User | PersonRow | None
    ) -> str:
        """The reference's example: 🎯 header, client, phone, source, budget, then the assignee."""
        body = texts.t(
            "notify.lead_body",
            client=esc(lead.client_name),
            phone=format_phone_html(lead.phone_number),
            source=esc(lead.source),
            budget=esc(format_money(lead.budget, self.settings.crm.currency)),
        )
        line = (
            texts.t("notify.assignee_line", assignee=user_label(assignee))
            if assignee is not None
            else texts.t("notify.unassigned_line")
        )
        return f"{texts.t(header_key, lead_id=lead.id)}\n\n{body}\n\n{line}"

    def team_post(
        self, texts: Texts, lead: Lead | LeadFacts, assignee: User | PersonRow | None
    ) -> tuple[str, InlineKeyboardMarkup | None]:
        text = self.lead_text(texts, lead, "notify.new_lead", assignee=assignee)
        if assignee is not None or lead.assigned_to_id is not None:
            return text, None
        return text, _column(_button(texts.t("notify.btn.take"), LeadCB(action=LeadAction.TAKE, lead_id=lead.id)))

    def status_text(self, texts: Texts, lead: Lead, old: LeadStatus, new: LeadStatus, actor: Actor | None) -> str:
        text = texts.t(
            "notify.status",
            lead_id=lead.id,
            client=esc(lead.client_name),
            old=status_label(texts, old),
            new=status_label(texts, new),
            actor=self._actor_label(texts, actor),
        )
        if new == LeadStatus.REFUSED and lead.refusal_reason:
            text += "\n" + texts.t("notify.reason_line", reason=esc(lead.refusal_reason))
        return text

    def open_button(self, texts: Texts, lead: Lead) -> InlineKeyboardMarkup:
        return _column(_button(texts.t("notify.btn.open"), LeadCB(action=LeadAction.OPEN, lead_id=lead.id)))

    def lead_buttons(self, texts: Texts, lead: Lead | LeadFacts, recipient: User | Recipient) -> InlineKeyboardMarkup:
        """Open the card; "Take into work" when the recipient may (their own lead, still new)."""
        buttons = [_button(texts.t("notify.btn.open"), LeadCB(action=LeadAction.OPEN, lead_id=lead.id))]
        if lead.status == LeadStatus.NEW and lead.assigned_to_id == recipient.id:
            buttons.append(
                _button(texts.t("notify.btn.take_work"), LeadStatusCB(lead_id=lead.id, code=StatusCode.IN_WORK))
            )
        return _column(*buttons)

    # ---- helpers -----------------------------------------------------------------------------------------

    def _texts(self, user: User | Recipient) -> Texts:
        return texts_for(pick_language(user.language, None, self.settings.bot.default_language))

    def _team_texts(self) -> Texts:
        return texts_for(self.settings.bot.default_language)

    @staticmethod
    def _actor_label(texts: Texts, actor: Actor | None) -> str:
        return user_label(actor) if actor is not None else texts.t("notify.system")

    @staticmethod
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

    @staticmethod
    async def _lead(uow: UnitOfWork, lead_id: int) -> Lead | None:
        lead = await uow.session.get(Lead, lead_id)
        return lead if lead is not None and lead.deleted_at is None else None

    @staticmethod
    async def _user(uow: UnitOfWork, user_id: int | None) -> User | None:
        return await uow.session.get(User, user_id) if user_id is not None else None
