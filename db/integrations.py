"""Changes for the remote CRMs, queued in the transaction of the change (the EventSink ``IntegrationRules``),
and what comes back from them (``apply_remote_status``).

Every configured integration gets a job per change of a lead, keyed by what made it (the history row,
the comment), so the same change is never queued twice. A change that came *from* an integration (the
unit of work's ``origin``) is not queued back to it: a status moved in amoCRM moves ours and stops there.

``queue_first_sync`` queues what was there before an integration was (``leadbot sync``); ``overviews`` and
``retry_failed`` are the admins' view of the queues (/integrations).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta

from sqlalchemy import select

from db import permissions
from db.enums import LeadStatus
from db.errors import Forbidden, InvalidTransition
from db.events import CommentAdded, DomainEvent, LeadCreated, LeadReassigned, LeadStatusChanged, LeadUpdated
from db.models import IntegrationJob, IntegrationLink, Lead, MetaLeadgen, utcnow
from db.permissions import Actor
from db.repositories.integrations import (
    AMOCRM,
    BITRIX24,
    CRM_INTEGRATIONS,
    INTEGRATIONS,
    META,
    IntegrationOverview,
    JobRow,
)
from db.uow import EventSink, UnitOfWork

__all__ = [
    "AMOCRM",
    "BITRIX24",
    "CRM_INTEGRATIONS",
    "INTEGRATIONS",
    "META",
    "REMOTE_REFUSAL",
    "SENT_FIELDS",
    "EventSinks",
    "IntegrationRules",
    "apply_remote_status",
    "overviews",
    "queue_first_sync",
    "retry_failed",
]

# The fields a remote CRM keeps of ours: a change to another one (the notes of a follow-up) is not sent.
SENT_FIELDS = frozenset({"client_name", "phone_number", "budget", "source", "notes"})


class EventSinks:
    """Several sinks, in order, in the same transaction (the notifications, then the integrations)."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None:
        for sink in self.sinks:
            await sink(uow, events)


class IntegrationRules:
    """The EventSink queueing each change for every integration that is configured (``enabled``)."""

    def __init__(self, enabled: Collection[str]) -> None:
        self.crms = [name for name in CRM_INTEGRATIONS if name in enabled]
        self.meta = META in enabled

    async def __call__(self, uow: UnitOfWork, events: list[DomainEvent]) -> None:
        crms = [name for name in self.crms if name != uow.origin]
        meta = self.meta and uow.origin != META
        if not crms and not meta:
            return
        rows: list[JobRow] = []
        for event in events:
            if isinstance(event, LeadCreated):
                rows += [JobRow(name, event.lead_id, "create", f"{name}:create:{event.lead_id}") for name in crms]
            elif isinstance(event, LeadStatusChanged | LeadReassigned | LeadUpdated):
                if isinstance(event, LeadUpdated) and not SENT_FIELDS.intersection(event.fields):
                    continue  # nothing the remote side keeps
                # A status change says so: a pull behind which it waits must not undo it (``worker``).
                facts = {"status": event.new.value} if isinstance(event, LeadStatusChanged) else {}
                rows += [JobRow(name, event.lead_id, "update", f"{name}:h{event.history_id}", facts) for name in crms]
            elif isinstance(event, CommentAdded):
                rows += [
                    JobRow(
                        name, event.lead_id, "comment", f"{name}:c{event.comment_id}", {"comment_id": event.comment_id}
                    )
                    for name in crms
                ]
        if meta:
            rows += await _meta_stages(uow, events)
        await uow.integrations.enqueue_many(rows)


async def _meta_stages(uow: UnitOfWork, events: list[DomainEvent]) -> list[JobRow]:
    """A stage event for each status a lead from a Meta form reaches (its first, ``новый``, included)."""
    stages: list[tuple[int, str, LeadStatus]] = []
    for event in events:
        if isinstance(event, LeadCreated):
            stages.append((event.lead_id, f"meta:create:{event.lead_id}", LeadStatus.NEW))
        elif isinstance(event, LeadStatusChanged):
            stages.append((event.lead_id, f"meta:h{event.history_id}", event.new))
    if not stages:
        return []
    await uow.session.flush()
    from_meta = set(
        (
            await uow.session.scalars(
                select(MetaLeadgen.lead_id).where(MetaLeadgen.lead_id.in_({lead_id for lead_id, _, _ in stages}))
            )
        ).all()
    )
    at = utcnow().isoformat()
    return [
        JobRow(META, lead_id, "stage", key, {"status": status.value, "at": at})
        for lead_id, key, status in stages
        if lead_id in from_meta
    ]


async def apply_remote_status(uow: UnitOfWork, lead_id: int, status: LeadStatus, *, origin: str) -> bool:
    """Move our lead to the status its remote twin has now, as the integration (an admin's rights),
    without sending the move back there. A jump our rules make in two steps (``новый`` → ``закрыт``)
    is made in two. False when the lead is there already or gone."""
    uow.origin = origin
    lead = await uow.session.get(Lead, lead_id, populate_existing=True)
    if lead is None or lead.deleted_at is not None or lead.status == status:
        return False
    actor = await uow.tokens.integration_user()
    reason = REMOTE_REFUSAL.get(origin, "refused in the CRM") if status == LeadStatus.REFUSED else None
    try:
        await uow.leads.change_status(actor, lead_id, status, reason=reason)
    except InvalidTransition:
        if status not in (LeadStatus.CLOSED, LeadStatus.REFUSED) or lead.status != LeadStatus.NEW:
            raise
        await uow.leads.change_status(actor, lead_id, LeadStatus.IN_WORK)
        await uow.leads.change_status(actor, lead_id, status, reason=reason)
    return True


REMOTE_REFUSAL = {AMOCRM: "Отказ в amoCRM", BITRIX24: "Отказ в Bitrix24"}


async def queue_first_sync(uow: UnitOfWork, integration: str, *, now: datetime | None = None) -> int:
    """Queue every live lead not linked yet (amoCRM, Bitrix24: link by phone or create), or, for Meta,
    the current stage of each lead from a Meta form changed within the last 7 days. Idempotent: a second
    run queues only what the first did not (an interrupted sync goes on where it stopped)."""
    now = now or utcnow()
    rows: list[JobRow] = []
    if integration in CRM_INTEGRATIONS:
        linked = select(IntegrationLink.lead_id).where(IntegrationLink.integration == integration)
        queued = select(IntegrationJob.lead_id).where(
            IntegrationJob.integration == integration, IntegrationJob.kind == "create"
        )
        ids = await uow.session.scalars(
            select(Lead.id)
            .where(Lead.deleted_at.is_(None), Lead.id.not_in(linked), Lead.id.not_in(queued))
            .order_by(Lead.id)
        )
        rows = [
            JobRow(integration, lead_id, "create", f"{integration}:sync:{lead_id}", {"first_sync": True})
            for lead_id in ids.all()
        ]
    elif integration == META:
        recent = await uow.session.execute(
            select(Lead.id, Lead.status, Lead.updated_at)
            .join(MetaLeadgen, MetaLeadgen.lead_id == Lead.id)
            .where(Lead.deleted_at.is_(None), Lead.updated_at >= now - timedelta(days=7))
            .distinct()
            .order_by(Lead.id)
        )
        rows = [
            JobRow(
                META, lead_id, "stage", f"meta:sync:{lead_id}:{status}", {"status": str(status), "at": at.isoformat()}
            )
            for lead_id, status, at in recent.all()
        ]
    else:
        raise ValueError(f"unknown integration {integration!r}")
    await uow.integrations.enqueue_many(rows)
    return len(rows)


# ---- admins (/integrations) ---------------------------------------------------------------------------------


async def overviews(uow: UnitOfWork, actor: Actor, integrations: Iterable[str]) -> list[IntegrationOverview]:
    """The queue, links and last outcome of each integration named, in that order: for admins."""
    if not permissions.can_manage_integrations(actor):
        raise Forbidden("integrations")
    return [await uow.integrations.overview(name) for name in integrations]


async def retry_failed(uow: UnitOfWork, actor: Actor, integration: str, *, now: datetime | None = None) -> int:
    """Queue every failed job of ``integration`` again, with fresh attempts (admins); how many."""
    if not permissions.can_manage_integrations(actor):
        raise Forbidden("integrations")
    return await uow.integrations.retry_failed(integration, now or utcnow())
