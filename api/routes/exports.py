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

from api.deps import CurrentUser, ListFilterDep, SettingsDep, UowDep
from api.edge import BearerRoute
from api.errors import responses
from api.schemas import IsoDate
from bot.texts import pick_language, texts_for
from bot.xlsx_export import XLSX_MIME, export_name, export_to_file
from db.analytics import MAX_PERIOD_DAYS, Period

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
    flt: ListFilterDep,
    from_: Annotated[IsoDate | None, Query(alias="from", description="The analytics sheet's first day")] = None,
    to: Annotated[IsoDate | None, Query(description="The analytics sheet's last day")] = None,
) -> FileResponse:
    period = analytics_period(from_, to, datetime.now(settings.crm.tz).date())
    texts = texts_for(pick_language(actor.language, None, settings.bot.default_language))
    path, _count = await export_to_file(uow, actor, flt, period, texts, settings.crm)
    return FileResponse(path, media_type=XLSX_MIME, filename=export_name(), background=BackgroundTask(os.unlink, path))
