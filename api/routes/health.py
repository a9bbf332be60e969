"""Liveness for load balancers: no token, no database work."""

from __future__ import annotations

from fastapi import APIRouter

from api.edge import EdgeRoute
from api.errors import responses
from api.schemas import Health

router = APIRouter(tags=["health"], route_class=EdgeRoute, responses=responses(408, 413))


@router.get("/api/health", summary="Liveness check (no token needed)")
async def health() -> Health:
    return Health(status="ok")
