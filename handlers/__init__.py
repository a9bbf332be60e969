"""Feature routers, in the order the dispatcher tries them.

Each module exposes ``create_router()`` rather than a module-level router: a router can belong to one
dispatcher only, and the tests build a fresh production dispatcher for every case.

Order matters: ``errors`` first (it only sees exceptions), then ``common`` (``/cancel`` must win over
any state handler), the feature routers, and last ``fallback`` for anything nothing else took.
"""

from __future__ import annotations

from aiogram import Router

from handlers import (
    common,
    errors,
    fallback,
    followups,
    lead_card,
    leads_list,
    new_lead,
    outbox_admin,
    people,
    start,
    team,
    tokens,
)


def get_routers() -> list[Router]:
    return [
        errors.create_router(),
        common.create_router(),
        start.create_router(),
        new_lead.create_router(),
        lead_card.create_router(),
        leads_list.create_router(),
        people.create_router(),
        followups.create_router(),
        team.create_router(),
        tokens.create_router(),
        outbox_admin.create_router(),
        fallback.create_router(),
    ]
