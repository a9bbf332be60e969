"""Intake from the web: a website form or another system creates leads with a per-source secret.

The lead is created exactly as ``POST /api/leads/create`` creates one (validation, 409 on a duplicate
phone, history, notifications), acting as the integration user (see ``db.repositories.tokens``).
The same ``Idempotency-Key`` sent again creates nothing and repeats the first answer.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from api.deps import SettingsDep, UowDep
from api.errors import ApiError, responses, unauthorized
from api.schemas import MAX_SOURCE, LeadOut, WebhookLead, valid_unicode
from bot.config import Settings
from db.repositories import LeadDraft

router = APIRouter(tags=["intake"])

REPLAYED_HEADER = "Idempotent-Replayed"


def _secret_for(settings: Settings, source: str) -> tuple[str, str] | None:
    """(configured name, secret) for ``source``, compared case-insensitively."""
    for name, secret in settings.api.webhook_secrets.items():
        if name.casefold() == source.casefold():
            return name, secret.get_secret_value()
    return None


@router.post(
    "/api/leads/webhook/{source}",
    status_code=201,
    response_model=LeadOut,
    summary="Create a lead from a website form or another system",
    description="Authenticated by `X-Webhook-Secret`, the secret configured for `{source}` in "
    "`[api.webhook_secrets]` (no bearer token). The lead's source is the body's `source`, or `{source}` "
    "itself (e.g. `/api/leads/webhook/Instagram`). Send an `Idempotency-Key` to make retries safe: the "
    "same key again answers the first response (with `Idempotent-Replayed: true`) and creates nothing.",
    responses={
        **responses(400, 409),
        401: {"model": responses(401)[401]["model"], "description": "Missing or wrong webhook secret"},
        404: {"model": responses(404)[404]["model"], "description": "No webhook is configured for this source"},
    },
)
async def webhook_lead(
    source: Annotated[str, Path(min_length=1, max_length=MAX_SOURCE), AfterValidator(valid_unicode)],
    body: WebhookLead,
    uow: UowDep,
    settings: SettingsDep,
    x_webhook_secret: Annotated[str | None, Header(max_length=256)] = None,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> LeadOut | JSONResponse:
    configured = _secret_for(settings, source)
    if configured is None:
        raise ApiError(404, "not_found", f"no webhook is configured for source {source!r}")
    name, secret = configured
    if x_webhook_secret is None or not hmac.compare_digest(x_webhook_secret.encode(), secret.encode()):
        raise unauthorized("missing or wrong X-Webhook-Secret")
    scope = f"webhook:{name}"
    if idempotency_key is not None:
        first = await uow.idempotency.recall(scope, idempotency_key)
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
        if not await uow.idempotency.remember(scope, idempotency_key, stored, lead_id=lead.id):
            raise ApiError(409, "duplicate", "a request with this Idempotency-Key is being processed")
    return out
