"""Reminder, escalation and digest messages: what ``db.reminders`` queued, rendered at send time."""

from __future__ import annotations

from datetime import date
from typing import Any

from bot.presentation.base import Rendered, Renderer
from bot.presentation.render_context import RenderContext
from bot.presentation.views import esc, format_dt, format_phone_html, status_label, user_label
from bot.texts import Texts
from db.enums import LeadStatus
from db.models import Lead
from db.reminders import DIGEST_ITEMS, Kind
from db.repositories.followups import FollowUpItem
from db.uow import UnitOfWork
from keyboards.followups import escalation_keyboard, followup_keyboard, reminder_keyboard


def _lead_params(ctx: RenderContext, texts: Texts, lead: Lead) -> dict[str, object]:
    return {
        "lead_id": lead.id,
        "client": esc(lead.client_name),
        "phone": format_phone_html(lead.phone_number),
        "source": esc(lead.source),
        "assignee": user_label(lead.assigned_to, texts),
        "since": format_dt(lead.created_at, ctx.tz),
    }


def _followup_params(ctx: RenderContext, item: FollowUpItem) -> dict[str, object]:
    return {
        "lead_id": item.lead.id,
        "client": esc(item.lead.client_name),
        "phone": format_phone_html(item.lead.phone_number),
        "text": esc(item.followup.text),
        "due": format_dt(item.followup.due_at, ctx.tz),
    }


def _more(texts: Texts, rest: int) -> list[str]:
    return [texts.t("digest.more", count=rest)] if rest > 0 else []


def _day(facts: dict[str, Any]) -> str:
    return date.fromisoformat(str(facts["date"])).strftime("%d.%m.%Y")


async def _reminder(ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    text = texts.t("reminders.new_lead", number=facts["number"], **_lead_params(ctx, texts, lead))
    return Rendered(text, reminder_keyboard(texts, lead.id))


async def _escalation(
    ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None
) -> Rendered | None:
    lead = await ctx.lead(uow, facts["lead_id"])
    if lead is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    text = texts.t("reminders.escalation", number=facts["number"], **_lead_params(ctx, texts, lead))
    return Rendered(text, escalation_keyboard(texts, lead.id))


async def _followup_due(
    ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None
) -> Rendered | None:
    item = await uow.followups.load(int(facts["followup_id"]))
    if item is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    text = texts.t("followups.due", **_followup_params(ctx, item))
    return Rendered(text, followup_keyboard(texts, item.followup.id, item.lead.id))


async def _followup_overdue(
    ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None
) -> Rendered | None:
    item = await uow.followups.load(int(facts["followup_id"]))
    if item is None:
        return None
    texts = ctx.texts(facts.get("lang"))
    who = await ctx.user(uow, facts.get("who_id"))
    text = texts.t("followups.overdue", who=user_label(who, texts), **_followup_params(ctx, item))
    return Rendered(text, escalation_keyboard(texts, item.lead.id))


async def _digest(ctx: RenderContext, uow: UnitOfWork, facts: dict[str, Any], user_id: int | None) -> Rendered | None:
    texts = ctx.texts(facts.get("lang"))
    if facts.get("scope") == "team":
        return Rendered(await _team_digest(ctx, uow, texts, facts))
    return Rendered(await _seller_digest(ctx, uow, texts, facts))


async def _seller_digest(ctx: RenderContext, uow: UnitOfWork, texts: Texts, facts: dict[str, Any]) -> str:
    """The listed items as they are now; one deleted since is left out (the counts are the job's)."""
    lines = [texts.t("digest.seller.header", date=_day(facts))]
    leads_total = int(facts.get("leads_total", 0))
    if leads_total:
        lines += ["", texts.t("digest.seller.new", count=leads_total)]
        leads = [lead for lead_id in facts.get("leads", []) if (lead := await ctx.lead(uow, lead_id)) is not None]
        lines += [
            texts.t(
                "digest.lead_item",
                lead_id=lead.id,
                client=esc(lead.client_name),
                source=esc(lead.source),
                since=format_dt(lead.created_at, ctx.tz),
            )
            for lead in leads
        ]
        lines += _more(texts, leads_total - len(facts.get("leads", [])))
    for title, section in (("digest.seller.overdue", "overdue"), ("digest.seller.today", "today")):
        total = int(facts.get(f"{section}_total", 0))
        if total:
            ids = facts.get(section, [])
            items = [item for fid in ids if (item := await uow.followups.load(int(fid))) is not None]
            lines += ["", texts.t(title, count=total)]
            lines += [texts.t("digest.followup_item", **_followup_params(ctx, item)) for item in items]
            lines += _more(texts, total - len(ids))
    return "\n".join(lines)


async def _team_digest(ctx: RenderContext, uow: UnitOfWork, texts: Texts, facts: dict[str, Any]) -> str:
    """Counts by status and the people with overdue work."""
    counts = facts.get("statuses", {})
    lines = [texts.t("digest.team.header", date=_day(facts)), "", texts.t("digest.team.statuses")]
    lines += [
        texts.t("digest.team.status_item", status=status_label(texts, status), count=counts.get(str(status), 0))
        for status in LeadStatus
    ]
    unassigned = int(facts.get("unassigned", 0))
    if unassigned:
        lines.append(texts.t("digest.team.unassigned", count=unassigned))
    overdue = facts.get("overdue", [])
    lines.append("")
    if not overdue:
        lines.append(texts.t("digest.team.no_overdue"))
    else:
        lines.append(texts.t("digest.team.overdue"))
        for user_id, followups, leads in overdue:
            user = await ctx.user(uow, user_id)
            lines.append(
                texts.t("digest.team.overdue_item", name=user_label(user, texts), followups=followups, leads=leads)
            )
        lines += _more(texts, int(facts.get("overdue_people", len(overdue))) - DIGEST_ITEMS)
    return "\n".join(lines)


REMINDER_RENDERERS: dict[str, Renderer] = {
    Kind.REMINDER: _reminder,
    Kind.REMINDER_ESCALATION: _escalation,
    Kind.FOLLOWUP_DUE: _followup_due,
    Kind.FOLLOWUP_OVERDUE: _followup_overdue,
    Kind.DIGEST: _digest,
}
