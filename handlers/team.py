"""The team chat's "Take" button: the first salesperson to press it gets the unassigned lead.

``uow.leads.take`` is one conditional UPDATE, so two presses at once give one owner; the loser is told
the lead is taken. The post itself is edited by the notification outbox (``db.notifications``): the
take is a reassignment event, and the event rewrites the team post to show who has the lead — the same
way it does when a manager assigns it with /assign.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery

from bot.middlewares import WRITES
from bot.texts import Texts
from db import permissions
from db.events import LeadReassigned
from db.permissions import Actor
from db.uow import UnitOfWork
from keyboards.callbacks import LeadAction, LeadCB


async def on_take(query: CallbackQuery, callback_data: LeadCB, actor: Actor, uow: UnitOfWork, texts: Texts) -> None:
    if actor.role not in permissions.ASSIGNABLE_ROLES:
        await query.answer(texts.t("team.only_sellers"), show_alert=True)
        return
    lead = await uow.leads.take(actor, callback_data.lead_id)
    took = any(isinstance(event, LeadReassigned) and event.lead_id == lead.id for event in uow.events)
    await query.answer(texts.t("team.taken_by_you" if took else "team.already_yours", lead_id=lead.id))


def create_router() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(on_take, LeadCB.filter(F.action == LeadAction.TAKE), flags=WRITES)
    return router
