"""Intake from the web: a website form or another system creates leads with a per-source secret.

The lead is created exactly as ``POST /api/leads/create`` creates one (validation, 409 on a duplicate
phone, history, notifications), acting as the integration user (see ``db.repositories.tokens``).
The secret is checked by the edge (``api.edge.WebhookRoute``) before the body is read. The same
``Idempotency-Key`` sent again with the same request creates nothing and repeats the first answer;
with a different request it is a 409 (``idempotency_key_reused``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse

from api.deps import UowDep, WebhookSource
from api.edge import WebhookRoute
from api.errors import ApiError, responses
from api.schemas import MAX_SOURCE, LeadOut, WebhookLead, visible_param
from db.repositories import LeadDraft

router = APIRouter(tags=["intake"], route_class=WebhookRoute, responses=responses(408, 413, 429, 503))

REPLAYED_HEADER = "Idempotent-Replayed"


def request_hash(method: str, path: str, body: bytes) -> str:
    """What an idempotency key is bound to: the method, the path and the JSON body, the body in one
    canonical form (keys sorted, no spaces), so a retry that merely reorders keys is the same request."""
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


@router.post(
    "/api/leads/webhook/{source}",
    status_code=201,
    response_model=LeadOut,
    summary="Create a lead from a website form or another system",
    description="Authenticated by `X-Webhook-Secret`, the secret configured for `{source}` in "
    "`[api.webhook_secrets]` (no bearer token). The lead's source is the body's `source`, or `{source}` "
    "itself (e.g. `/api/leads/webhook/Instagram`). Send an `Idempotency-Key` to make retries safe: the "
    "same key with the same body answers the first response (with `Idempotent-Replayed: true`) and "
    "creates nothing; the same key with a different body is a 409 `idempotency_key_reused`.",
    responses={
        **responses(400, 409),
        401: {"model": responses(401)[401]["model"], "description": "Missing or wrong webhook secret"},
        404: {"model": responses(404)[404]["model"], "description": "No webhook is configured for this source"},
    },
)
async def webhook_lead(
    request: Request,
    source: Annotated[str, Path(min_length=1, max_length=MAX_SOURCE), visible_param("source")],
    body: WebhookLead,
    uow: UowDep,
    name: WebhookSource,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> LeadOut | JSONResponse:
    scope = f"webhook:{name}"
    fingerprint = None
    if idempotency_key is not None:
        fingerprint = request_hash("POST", f"/api/leads/webhook/{name}", await request.body())
        first = await uow.idempotency.recall(scope, idempotency_key, fingerprint)
        if first is not None:
            return JSONResponse(first["body"], status_code=first["status"], headers={REPLAYED_HEADER: "true"})
    actor = await uow.tokens.integration_user()
    draft = LeadDraft(
        client_name=body.client_name,
        phone_number=body.phone_number,
        source=body.source or name,
        budget=body.budget,
        notes=body.notes,
        assigned_to=body.assigned_to,
    )
    lead = await uow.leads.create(actor, draft)
    out = LeadOut.of(lead)
    if idempotency_key is not None:
        stored = {"status": 201, "body": out.model_dump(mode="json")}
        if not await uow.idempotency.remember(
            scope, idempotency_key, stored, lead_id=lead.id, request_hash=fingerprint
        ):
            raise ApiError(409, "duplicate", "a request with this Idempotency-Key is being processed")
    return out
