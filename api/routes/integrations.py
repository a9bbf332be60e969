"""What amoCRM and Bitrix24 tell us: ``POST /api/integrations/amocrm/webhook`` (amo's webhooks, form-encoded
``leads[status][0][id]=…``) and ``POST /api/integrations/bitrix24/event`` (Bitrix24's outgoing event
``ONCRMLEADUPDATE``, which carries only the lead's id).

Neither trusts the body's claims: for each remote lead linked to one of ours a ``pull`` job is queued,
and the worker reads the lead from the CRM itself and moves ours to its status (as the integration,
never sent back there: no ping-pong). The answer goes back at once; a lead not linked to ours (made there
by hand) is left alone. amo is authenticated by ``[amocrm] webhook_secret`` in the URL's query,
``?secret=…`` (amo's webhook settings take only a URL; the access log never writes the query), or the
``X-Webhook-Secret`` header, checked before the body is read; Bitrix24 by its
``auth[application_token]``, which is in the body. A wrong one counts as a failed authentication, like a
wrong API token.
Not in the OpenAPI schema: the CRMs' protocols, not ours. Unconfigured, both answer 404.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.edge import EdgeRoute, auth_failed, raw_header, refuse_if_blocked, settings_of
from api.errors import ApiError
from db.integrations import AMOCRM, BITRIX24
from db.repositories.integrations import JobRow
from integrations.amocrm import ForeignWebhook, parse_webhook, webhook_secret_matches
from integrations.bitrix24 import EventRejected, parse_event

SECRET_HEADER = "X-Webhook-Secret"


class AmoCrmRoute(EdgeRoute):
    """amo's secret travels in the query or a header, so it is checked before the body is read."""

    async def authenticate(self, request: Request) -> None:
        section = settings_of(request).amocrm
        if not section.enabled or section.webhook_secret is None:
            raise ApiError(404, "not_found", "amoCRM webhooks are not configured")
        await refuse_if_blocked(request)
        header = raw_header(request, SECRET_HEADER)
        given = request.query_params.get("secret") or (header.decode("utf-8", errors="replace") if header else None)
        if not webhook_secret_matches(section, given):
            raise await auth_failed(request, "missing or wrong amoCRM webhook secret")


class Bitrix24Route(EdgeRoute):
    async def authenticate(self, request: Request) -> None:
        section = settings_of(request).bitrix24
        if not section.enabled or section.application_token is None:
            raise ApiError(404, "not_found", "Bitrix24 events are not configured")
        await refuse_if_blocked(request)


amocrm_router = APIRouter(tags=["integrations"], route_class=AmoCrmRoute, include_in_schema=False)
bitrix24_router = APIRouter(tags=["integrations"], route_class=Bitrix24Route, include_in_schema=False)


async def _queue_pulls(request: Request, integration: str, remote_ids: list[str]) -> int:
    """A pull for each remote lead linked to ours; how many were queued."""
    if not remote_ids:
        return 0
    async with request.app.state.uow_factory() as uow:
        rows = []
        for remote_id in remote_ids:
            lead_id = await uow.integrations.lead_for_remote(integration, remote_id)
            if lead_id is not None:
                key = f"{integration}:pull:{remote_id}:{uuid.uuid4().hex}"
                rows.append(JobRow(integration, lead_id, "pull", key))
        await uow.integrations.enqueue_many(rows)
        await uow.commit()
    return len(rows)


def _form(body: bytes) -> list[tuple[str, str]]:
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


@amocrm_router.post("/api/integrations/amocrm/webhook")
async def amocrm_webhook(request: Request) -> JSONResponse:
    section = settings_of(request).amocrm  # its secret was checked by AmoCrmRoute, before the body
    try:
        changes = parse_webhook(_form(await request.body()), section)
    except ForeignWebhook as exc:
        raise ApiError(403, "forbidden", str(exc)) from None
    queued = await _queue_pulls(request, AMOCRM, [change.remote_id for change in changes])
    return JSONResponse({"received": len(changes), "queued": queued})


@bitrix24_router.post("/api/integrations/bitrix24/event")
async def bitrix24_event(request: Request) -> JSONResponse:
    section = settings_of(request).bitrix24
    try:
        remote_id = parse_event(section, await request.body())
    except EventRejected as exc:
        raise await auth_failed(request, str(exc)) from None
    queued = await _queue_pulls(request, BITRIX24, [remote_id] if remote_id else [])
    return JSONResponse({"received": 1 if remote_id else 0, "queued": queued})
