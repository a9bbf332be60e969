"""Feature routers, in the order the dispatcher tries them.

Each module exposes ``create_router()`` rather than a module-level router: a router can belong to one
dispatcher only, and the tests build a fresh production dispatcher for every case.

Order matters, for meaning and for speed:

- the busiest features first: aiogram walks the routers in order for every update, and each router
  passed costs a third of a whole no-op dispatch. The card and the lists are most of the traffic;
- a feature's conversation steps sit in a sub-router behind one check of the state
  (``handlers.filters.conversation_router``), which also keeps commands and cancel words away from
  them: ``/cancel`` in ``common`` wins over any step waiting for text wherever ``common`` stands;
- a router lets in only the button presses its handlers are for (``handlers.filters.callbacks_by_prefix``);
- ``fallback`` for anything nothing else took;
- ``errors`` last: it has only error handlers, and an error event is rare, so no ordinary update
  should have to pass it.
"""

from __future__ import annotations

from aiogram import Router

from handlers import (
    common,
    errors,
    exports,
    fallback,
    followups,
    imports,
    integrations_admin,
    lead_card,
    leads_list,
    new_lead,
    outbox_admin,
    people,
    sheets_admin,
    start,
    stats,
    team,
    tokens,
)
from handlers.filters import callbacks_by_prefix


def get_routers() -> list[Router]:
    routers = [
        lead_card.create_router(),
        leads_list.create_router(),
        common.create_router(),
        new_lead.create_router(),
        start.create_router(),
        people.create_router(),
        followups.create_router(),
        team.create_router(),
        tokens.create_router(),
        outbox_admin.create_router(),
        integrations_admin.create_router(),
        imports.create_router(),
        stats.create_router(),
        exports.create_router(),
        sheets_admin.create_router(),
        fallback.create_router(),
        errors.create_router(),
    ]
    return [callbacks_by_prefix(router) for router in routers]
