"""Meta lead ads webhook: ``GET /api/meta/webhook`` (the subscription check) and ``POST`` (deliveries).

A delivery is checked before anything of it is parsed: ``X-Hub-Signature-256`` must be the HMAC-SHA256
of the raw body with ``[meta] app_secret`` (compared in constant time; a wrong one counts as a failed
authentication, like a wrong token). Each ``leadgen`` change is recorded once by its ``leadgen_id`` (Meta
retries for up to 36 hours) and the answer (200) goes back at once; the lead itself is made by the
fetcher (``api.meta``) from the Graph API, with retries. Not in the OpenAPI schema: Meta's protocol, not
the CRM's API. Without ``[meta] app_secret``, ``verify_token`` and ``page_access_token`` both answer 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from api.edge import EdgeRoute, auth_failed, raw_header, refuse_if_blocked, secret_matches, settings_of
from api.errors import ApiError
from api.meta import MetaLeadFetcher
from db.errors import InvalidInput
from db.repositories.meta import Delivery

SIGNATURE_HEADER = "X-Hub-Signature-256"
_ID_LIMIT = 64


class MetaRoute(EdgeRoute):
    """Open only when Meta is configured; a client locked out for failed signatures stays out (429)."""

    async def authenticate(self, request: Request) -> None:
        if not settings_of(request).meta.enabled:
            raise ApiError(404, "not_found", "Meta lead ads are not configured")
        await refuse_if_blocked(request)


router = APIRouter(tags=["meta"], route_class=MetaRoute, include_in_schema=False)


@router.get("/api/meta/webhook")
async def verify_subscription(
    request: Request,
    mode: Annotated[str | None, Query(alias="hub.mode", max_length=32)] = None,
    token: Annotated[str | None, Query(alias="hub.verify_token", max_length=256)] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=256)] = None,
) -> PlainTextResponse:
    expected = settings_of(request).meta.verify_token
    assert expected is not None
    wanted = expected.get_secret_value().encode()
    if mode == "subscribe" and token is not None and challenge is not None and secret_matches(token.encode(), wanted):
        return PlainTextResponse(challenge)
    raise await auth_failed(request, "the verification token does not match", status_code=403)


def signature_ok(body: bytes, presented: bytes | None, secret: bytes) -> bool:
    expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return presented is not None and hmac.compare_digest(presented.strip().lower(), expected)


def _id(value: Any) -> str | None:
    if isinstance(value, int | str) and not isinstance(value, bool):
        text = str(value).strip()
        if text and len(text) <= _ID_LIMIT:
            return text
    return None


def leadgen_changes(payload: Any) -> list[Delivery]:
    """The ``leadgen`` changes of a delivery (other objects and fields are not ours: ignored)."""
    if not isinstance(payload, dict):
        raise InvalidInput("body", "meta_payload_invalid", "the delivery is not a JSON object")
    found: list[Delivery] = []
    for entry in payload.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        for change in entry.get("changes") or []:
            if not isinstance(change, dict) or change.get("field") != "leadgen":
                continue
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            leadgen_id = _id(value.get("leadgen_id"))
            if leadgen_id is None:
                continue
            found.append(
                Delivery(
                    leadgen_id=leadgen_id,
                    page_id=_id(value.get("page_id") or entry.get("id")),
                    form_id=_id(value.get("form_id")),
                    ad_id=_id(value.get("ad_id")),
                )
            )
    return found


@router.post("/api/meta/webhook")
async def receive_delivery(request: Request) -> JSONResponse:
    meta = settings_of(request).meta
    assert meta.app_secret is not None
    body = await request.body()
    if not signature_ok(body, raw_header(request, SIGNATURE_HEADER), meta.app_secret.get_secret_value().encode()):
        raise await auth_failed(request, f"missing or wrong {SIGNATURE_HEADER}")
    try:
        payload = json.loads(body)
    except ValueError:
        raise InvalidInput("body", "meta_payload_invalid", "the delivery is not JSON") from None
    deliveries = leadgen_changes(payload)
    if deliveries:
        async with request.app.state.uow_factory() as uow:
            await uow.meta.record(deliveries)
            await uow.commit()
        fetcher: MetaLeadFetcher = request.app.state.meta_fetcher
        fetcher.kick()
    return JSONResponse({"received": len(deliveries)})
