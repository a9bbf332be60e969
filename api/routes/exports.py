"""``GET /api/leads/export.xlsx``: the list's leads as an Excel file, with a period's analytics beside them.

The file is written in the request's read unit (batch by batch, ``bot.xlsx_export``) to a temporary
file; the unit is committed when the route returns, before the first byte leaves, and the file is
streamed from disk and removed once sent.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.deps import CurrentUser, SettingsDep, UowDep
from api.edge import BearerRoute
from api.errors import responses
from api.schemas import MAX_ID, MAX_SOURCE, Since, visible_param
from bot.texts import pick_language, texts_for
from bot.xlsx_export import XLSX_MIME, export_name, export_to_file
from db.analytics import MAX_PERIOD_DAYS, Period
from db.enums import LeadStatus
from db.repositories import LeadFilter

router = APIRouter(
    prefix="/api/leads", tags=["leads"], route_class=BearerRoute, responses=responses(408, 413, 429, 503)
)

ANALYTICS_DAYS = 30


def analytics_period(first: date | None, last: date | None, today: date) -> Period:
    """``from``..``to``; ``to`` defaults to today, ``from`` to 30 days before ``to``."""
    last = last if last is not None else today
    if first is None:
        Period(last, last)  # refuses a day out of range before any arithmetic on it
        return Period.last_days(last, ANALYTICS_DAYS)
    return Period(first, last)


@router.get(
    "/export.xlsx",
    summary="Export leads to Excel",
    description="Every lead the caller may list (a salesperson: their own), filtered as `GET /api/leads/` "
    "filters, newest first, with every field, the salesperson's name, dates in the CRM's time zone and the "
    "budget as a number in the configured currency; frozen header, filters on. A second sheet holds the "
    f"analytics (`GET /api/analytics/summary`) of `from`..`to` (default: the last {ANALYTICS_DAYS} days; at "
    f"most {MAX_PERIOD_DAYS} days). Headers are in the caller's language.",
    response_class=FileResponse,
    responses={
        200: {"content": {XLSX_MIME: {"schema": {"type": "string", "format": "binary"}}}, "description": "The file"},
        **responses(400, 401, 403),
    },
)
async def export_xlsx(
    actor: CurrentUser,
    uow: UowDep,
    settings: SettingsDep,
    status: Annotated[LeadStatus | None, Query(description="новый, в работе, закрыт, отказ")] = None,
    source: Annotated[
        str | None, Query(max_length=MAX_SOURCE, description="e.g. Instagram"), visible_param("source")
    ] = None,
    assigned_to: Annotated[int | None, Query(ge=1, le=MAX_ID, description="A salesperson's user id")] = None,
    q: Annotated[
        str | None,
        Query(min_length=2, max_length=100, description="Search text; no control characters, something visible"),
        visible_param("q"),
    ] = None,
    updated_since: Annotated[
        Since | None,
        Query(description="An ISO 8601 time (2025-12-03T10:00:00Z); UTC when no offset is given. Not a number."),
    ] = None,
    from_: Annotated[date | None, Query(alias="from", description="The analytics sheet's first day")] = None,
    to: Annotated[date | None, Query(description="The analytics sheet's last day")] = None,
) -> FileResponse:
    flt = LeadFilter(status=status, source=source, assigned_to=assigned_to, text=q, updated_since=updated_since)
    period = analytics_period(from_, to, datetime.now(settings.crm.tz).date())
    texts = texts_for(pick_language(actor.language, None, settings.bot.default_language))
    path, _count = await export_to_file(uow, actor, flt, period, texts, settings.crm)
    return FileResponse(path, media_type=XLSX_MIME, filename=export_name(), background=BackgroundTask(os.unlink, path))
