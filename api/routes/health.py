"""Liveness for load balancers: no token, no database work."""

from __future__ import annotations

from fastapi import APIRouter

from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/api/health", summary="Liveness check (no token needed)")
async def health() -> Health:
    return Health(status="ok")
