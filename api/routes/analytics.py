"""Analytics over HTTP: the figures of /stats as JSON (and, beside them, the PDF report)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.analytics_schemas import AnalyticsSummaryOut
from api.deps import CurrentUser, UowDep
from api.edge import BearerRoute
from api.errors import responses
from db.analytics import MAX_PERIOD_DAYS, Period

router = APIRouter(
    prefix="/api/analytics", tags=["analytics"], route_class=BearerRoute, responses=responses(408, 413, 429, 503)
)

From = Annotated[date, Query(alias="from", description="First day of lead creation, included (YYYY-MM-DD)")]
To = Annotated[date, Query(description="Last day, included (YYYY-MM-DD); the CRM's time zone")]
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
