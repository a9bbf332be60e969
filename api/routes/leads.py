"""The reference's lead endpoints. Thin: parse, call the repository as the token's user, shape the answer."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import CurrentUser, ListFilterDep, UowDep
from api.edge import BearerRoute
from api.errors import responses
from api.schemas import (
    MAX_ID,
    AssignIn,
    CommentIn,
    CommentOut,
    LeadCreate,
    LeadDetailOut,
    LeadListItem,
    LeadOut,
    LeadPage,
    LeadPatch,
    QueryInt,
)
from db.enums import LeadStatus
from db.errors import InvalidInput
from db.repositories import LeadChanges, LeadDraft

router = APIRouter(
    prefix="/api/leads", tags=["leads"], route_class=BearerRoute, responses=responses(408, 413, 429, 503)
)

# ``{lead_id:int}`` in the paths: only digits make a lead's URL, so ``PATCH /api/leads/create`` is the
# 405 of ``/create`` (and ``/api/leads/abc`` a 404), not a lead id that fails validation.
LeadId = Annotated[int, Path(ge=1, le=MAX_ID, description="The lead's id")]
MAX_PAGE = 10**9
# PATCH fields that go through ``update`` (the rest: ``status`` and ``assigned_to``).
_EDITABLE = ("client_name", "phone_number", "source", "budget", "notes", "closing_date")


@router.post(
    "/create",
    status_code=201,
    summary="Create a lead",
    description="Managers (admin, ROP, МОП) only. `assigned_to` assigns an active salesperson at once; "
    "the phone may be written in any common format and is stored as E.164.",
    responses=responses(400, 401, 403, 409),
)
async def create_lead(body: LeadCreate, actor: CurrentUser, uow: UowDep) -> LeadOut:
    lead = await uow.leads.create(actor, LeadDraft(**body.model_dump()))
    return LeadOut.of(lead)


@router.get(
    "/",
    summary="List leads, page by page",
    description="Newest first. A salesperson sees only their own leads. Additions: `q` (a name fragment "
    "or 3+ digits of the phone), `updated_since` (leads changed at or after that moment, for syncing).",
    responses=responses(400, 401, 403),
)
async def list_leads(
    actor: CurrentUser,
    uow: UowDep,
    flt: ListFilterDep,
    page: Annotated[QueryInt, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
) -> LeadPage:
    items, total = await uow.leads.list_offset(actor, flt, page=page, size=size)
    return LeadPage(
        items=[LeadListItem.of(lead) for lead in items],
        total=total,
        page=page,
        size=size,
        pages=math.ceil(total / size),
    )


async def _detail(uow: UowDep, actor: CurrentUser, lead_id: int) -> LeadDetailOut:
    detail = await uow.leads.get_detail(actor, lead_id, comments=0, history=0)
    return LeadDetailOut.of_detail(
        detail, await uow.meta.origin(lead_id), await uow.integrations.links_of_lead(lead_id)
    )


@router.get(
    "/{lead_id:int}",
    summary="A lead with its comments and history",
    responses=responses(400, 401, 403, 404),
)
async def get_lead(lead_id: LeadId, actor: CurrentUser, uow: UowDep) -> LeadDetailOut:
    return await _detail(uow, actor, lead_id)


@router.patch(
    "/{lead_id:int}",
    summary="Update a lead",
    description="Only the fields sent change. `status` follows the lifecycle (новый → в работе → закрыт | "
    "отказ, новый → отказ; admin and ROP may reopen); «отказ» needs `refusal_reason`, and `refusal_reason` "
    "needs a move to «отказ». Sending the current status changes nothing. An empty body is a 400. "
    "`assigned_to` reassigns (managers only). Answers the lead as GET does.",
    responses=responses(400, 401, 403, 404, 409),
)
async def update_lead(lead_id: LeadId, body: LeadPatch, actor: CurrentUser, uow: UowDep) -> LeadDetailOut:
    given = body.model_fields_set
    if not given:
        raise InvalidInput("", "nothing_to_change", "the PATCH changes nothing: send a field to change")
    if given == {"refusal_reason"} and body.refusal_reason is None:
        # A reason is never cleared by itself: alone, a null one would change nothing.
        raise InvalidInput("reason", "reason_without_refusal", "refusal_reason alone changes nothing")
    lead = await uow.leads.get(actor, lead_id)
    current_status, current_assignee, current_reason = lead.status, lead.assigned_to_id, lead.refusal_reason
    if body.refusal_reason is not None:
        # A reason goes with a move to «отказ»; alone (or beside another status) it would change nothing.
        if body.status != LeadStatus.REFUSED:
            raise InvalidInput(
                "reason", "reason_without_refusal", "refusal_reason is accepted only with status «отказ»"
            )
        if current_status == LeadStatus.REFUSED and body.refusal_reason.strip() != (current_reason or ""):
            raise InvalidInput(
                "reason", "reason_without_refusal", "the lead is already refused: its refusal_reason cannot change"
            )
    changes = LeadChanges(**{name: getattr(body, name) for name in _EDITABLE if name in given})
    if changes.given():
        await uow.leads.update(actor, lead_id, changes)
    if "assigned_to" in given:
        if body.assigned_to is None:
            raise InvalidInput("assigned_to", "assignee_invalid", "assigned_to cannot be cleared")
        if body.assigned_to != current_assignee:
            await uow.leads.assign(actor, lead_id, body.assigned_to)
    if "status" in given:
        if body.status is None:
            raise InvalidInput("status", "status_invalid", "status cannot be null")
        if body.status != current_status:
            await uow.leads.change_status(actor, lead_id, body.status, reason=body.refusal_reason)
    return await _detail(uow, actor, lead_id)


@router.post(
    "/{lead_id:int}/assign",
    summary="Assign the lead to a salesperson",
    description="Managers (admin, ROP, МОП) only; the assignee must be an active salesperson.",
    responses=responses(400, 401, 403, 404),
)
async def assign_lead(lead_id: LeadId, body: AssignIn, actor: CurrentUser, uow: UowDep) -> LeadDetailOut:
    await uow.leads.assign(actor, lead_id, body.assigned_to)
    return await _detail(uow, actor, lead_id)


@router.post(
    "/{lead_id:int}/comment",
    status_code=201,
    summary="Comment on a lead",
    responses=responses(400, 401, 403, 404),
)
async def add_comment(lead_id: LeadId, body: CommentIn, actor: CurrentUser, uow: UowDep) -> CommentOut:
    comment = await uow.leads.add_comment(actor, lead_id, body.text)
    return CommentOut.of(comment)


@router.delete(
    "/{lead_id:int}",
    status_code=204,
    summary="Delete a lead (admin and ROP only)",
    description="Soft delete: the lead leaves every list and answers 404; its history stays; its phone is free.",
    responses=responses(400, 401, 403, 404),
)
async def delete_lead(lead_id: LeadId, actor: CurrentUser, uow: UowDep) -> Response:
    await uow.leads.delete(actor, lead_id)
    return Response(status_code=204)
