"""Notification messages: what ``db.notifications`` queued (kind + facts), rendered at send time."""

from __future__ import annotations

from typing import Any

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.presentation.base import Rendered, Renderer
from bot.presentation.render_context import RenderContext
from bot.presentation.views import cut, esc, format_money, format_phone_html, status_label, user_label
from bot.texts import Texts
from db.enums import LeadStatus, StatusCode
from db.models import Comment, Lead, User
from db.notifications import (
    KIND_ASSIGNED,
    KIND_COMMENT,
    KIND_NEW_LEAD,
    KIND_STATUS,
    KIND_TEAM_NEW,
    KIND_TEAM_STATUS,
    KIND_TEAM_TAKEN,
    KIND_UNASSIGNED,
)
from db.permissions import Actor
from db.rows import PersonRow
from db.uow import UnitOfWork
from keyboards.callbacks import LeadAction, LeadCB, LeadStatusCB

COMMENT_PREVIEW = 600


def _button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _column(*buttons: InlineKeyboardButton) -> InlineKeyboardMarkup:
    """One button a row. Built directly: a keyboard builder deep-copies its rows, a cost paid per recipient."""
    return InlineKeyboardMarkup(inline_keyboard=[[button] for button in buttons])


# ---- the pieces (public: the team handler and the reminders reuse them) ------------------------------------


def lead_text(texts: Texts, lead: Lead, header_key: str, *, assignee: User | PersonRow | None, currency: str) -> str:
    """The reference's example: 🎯 header, client, phone, source, budget, then the assignee."""
    body = texts.t(
        "notify.lead_body",
        client=esc(lead.client_name),
        phone=format_phone_html(lead.phone_number),
        source=esc(lead.source),
        budget=esc(format_money(lead.budget, currency)),
    )
    line = (
        texts.t("notify.assignee_line", assignee=user_label(assignee))
        if assignee is not None
        else texts.t("notify.unassigned_line")
    )
    return f"{texts.t(header_key, lead_id=lead.id)}\n\n{body}\n\n{line}"


def status_text(texts: Texts, lead: Lead, old: LeadStatus, new: LeadStatus, actor: Actor | None) -> str:
    text = texts.t(
        "notify.status",
        lead_id=lead.id,
        client=esc(lead.client_name),
        old=status_label(texts, old),
        new=status_label(texts, new),
        actor=RenderContext.actor_label(texts, actor),
    )
    if new == LeadStatus.REFUSED and lead.refusal_reason:
        text += "\n" + texts.t("notify.reason_line", reason=esc(lead.refusal_reason))
    return text


def open_button(texts: Texts, lead_id: int) -> InlineKeyboardMarkup:
    return _column(_button(texts.t("notify.btn.open"), LeadCB(action=LeadAction.OPEN, lead_id=lead_id)))


def lead_buttons(texts: Texts, lead: Lead, recipient_id: int | None) -> InlineKeyboardMarkup:
    """Open the card; "Take into work" when the recipient may (their own lead, still new)."""
    buttons = [_button(texts.t("notify.btn.open"), LeadCB(action=LeadAction.OPEN, lead_id=lead.id))]
    if lead.status == LeadStatus.NEW and recipient_id is not None and lead.assigned_to_id == recipient_id:
        buttons.append(_button(texts.t("notify.btn.take_work"), LeadStatusCB(lead_id=lead.id, code=StatusCode.IN_WORK)))
    return _column(*buttons)


def take_button(texts: Texts, lead_id: int) -> InlineKeyboardMarkup:
    return _column(_button(texts.t("notify.btn.take"), LeadCB(action=LeadAction.TAKE, lead_id=lead_id)))


# ---- one renderer per kind ---------------------------------------------------------------------------------


async def _new_lead(ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    assignee = await ctx.user(uow, facts.get("assignee_id"))
    text = lead_text(texts, lead, "notify.new_lead", assignee=assignee, currency=ctx.currency)
    return Rendered(text, lead_buttons(texts, lead, user_id))


async def _team_post(
    ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None
) -> Rendered | None:
    """The team chat's post of a new lead; once it was taken (``taken``), who has it, without "Take"."""
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    taken = facts.get("taken")
    if taken is not None:
        text = lead_text(texts, lead, "notify.new_lead", assignee=None, currency=ctx.currency)
        assignee = await ctx.user(uow, taken.get("assignee_id"))
        key = "notify.team.taken" if taken.get("took") else "notify.team.assigned"
        return Rendered(text + "\n\n" + texts.t(key, assignee=user_label(assignee)))
    assignee = await ctx.user(uow, facts.get("assignee_id"))
    text = lead_text(texts, lead, "notify.new_lead", assignee=assignee, currency=ctx.currency)
    if assignee is not None or facts.get("assignee_id") is not None:
        return Rendered(text)
    return Rendered(text, take_button(texts, lead.id))


async def _status(ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    actor = await ctx.user(uow, facts.get("actor_id"))
    text = status_text(texts, lead, LeadStatus(facts["old"]), LeadStatus(facts["new"]), actor)
    return Rendered(text, open_button(texts, lead.id))


async def _team_status(
    ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None
) -> Rendered | None:
    rendered = await _status(ctx, uow, facts, user_id)
    return None if rendered is None else Rendered(rendered.text)


async def _assigned(ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    assignee = await ctx.user(uow, facts.get("assignee_id"))
    actor = await ctx.user(uow, facts.get("actor_id"))
    text = lead_text(texts, lead, "notify.assigned", assignee=assignee, currency=ctx.currency)
    text += "\n" + texts.t("notify.by_line", actor=ctx.actor_label(texts, actor))
    return Rendered(text, lead_buttons(texts, lead, user_id))


async def _unassigned(
    ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None
) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    assignee = await ctx.user(uow, facts.get("assignee_id"))
    actor = await ctx.user(uow, facts.get("actor_id"))
    text = texts.t(
        "notify.unassigned",
        lead_id=lead.id,
        client=esc(lead.client_name),
        assignee=user_label(assignee, texts),
        actor=ctx.actor_label(texts, actor),
    )
    return Rendered(text)


async def _comment(ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    comment = await uow.session.get(Comment, int(facts["comment_id"]))
    if lead is None or comment is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    author = await ctx.user(uow, comment.created_by_id)
    text = texts.t(
        "notify.comment",
        lead_id=lead.id,
        client=esc(lead.client_name),
        actor=ctx.actor_label(texts, author),
        text=esc(cut(comment.text, COMMENT_PREVIEW)),
    )
    return Rendered(text, open_button(texts, lead.id))


NOTIFICATION_RENDERERS: dict[str, Renderer] = {
    KIND_NEW_LEAD: _new_lead,
    KIND_TEAM_NEW: _team_post,
    KIND_TEAM_TAKEN: _team_post,
    KIND_STATUS: _status,
    KIND_TEAM_STATUS: _team_status,
    KIND_ASSIGNED: _assigned,
    KIND_UNASSIGNED: _unassigned,
    KIND_COMMENT: _comment,
}
