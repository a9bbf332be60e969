"""Analytics over HTTP: the figures of /stats as JSON, and the PDF report of /report."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.analytics_schemas import AnalyticsSummaryOut
from api.deps import CurrentUser, SettingsDep, UowDep
from api.edge import BearerRoute
from api.errors import responses
from api.schemas import IsoDate
from bot import pdf_report
from bot.texts import pick_language, texts_for
from db.analytics import MAX_PERIOD_DAYS, Period

router = APIRouter(
    prefix="/api/analytics", tags=["analytics"], route_class=BearerRoute, responses=responses(408, 413, 429, 503)
)

From = Annotated[IsoDate, Query(alias="from", description="First day of lead creation, included (YYYY-MM-DD)")]
To = Annotated[IsoDate, Query(description="Last day, included (YYYY-MM-DD); the CRM's time zone")]
_PERIOD_RULES = (
    f"Leads created from `from` to `to` (days in the CRM's time zone, both included; at most {MAX_PERIOD_DAYS} "
    "days); deleted leads are left out. Admin, ROP, МОП and the financier get the team's figures, a "
    "salesperson those of the leads assigned to them."
)


@router.get(
    "/summary",
    summary="Funnel by source, salespeople, refusal reasons, weekly cohorts",
    description=_PERIOD_RULES
    + " Taken into work: the lead has been «в работе»; closed and refused: its status now; conversion = "
    "closed ÷ created. Time to first response: from the lead's last assignment to its salesperson's first "
    "status change or comment.",
    responses=responses(400, 401, 403),
)
async def summary(from_: From, to: To, actor: CurrentUser, uow: UowDep) -> AnalyticsSummaryOut:
    result = await uow.analytics.summary(actor, Period(from_, to))
    return AnalyticsSummaryOut.of(result)


@router.get(
    "/report.pdf",
    summary="The period's analytics as a PDF report (A4)",
    description=_PERIOD_RULES
    + " The tables of `GET /api/analytics/summary` and the charts of /stats, in the caller's language.",
    response_class=Response,
    responses={
        200: {
            "content": {pdf_report.PDF_MIME: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The PDF",
        },
        **responses(400, 401, 403),
    },
)
async def report_pdf(from_: From, to: To, actor: CurrentUser, uow: UowDep, settings: SettingsDep) -> Response:
    result = await uow.analytics.summary(actor, Period(from_, to))
    await uow.commit()  # read: the drawing below holds no connection
    texts = texts_for(pick_language(actor.language, None, settings.bot.default_language))
    document = await asyncio.to_thread(pdf_report.render, result, texts)
    return Response(
        document,
        media_type=pdf_report.PDF_MIME,
        headers={"Content-Disposition": f'attachment; filename="{pdf_report.report_name(result)}"'},
    )
