"""The reference's permission table over HTTP: five roles × every endpoint, on own and others' leads.

"own" is a lead assigned to ``seller``, "other" one assigned to ``seller2``: for the salesperson that is
their lead and a colleague's; every other role must get the same answer for both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.api_support import bearer, create_lead
from tests.conftest import Team

OK, CREATED, NO_CONTENT, FORBIDDEN = 200, 201, 204, 403

# role -> endpoint -> (status on own lead, status on other's lead)
TABLE: dict[str, dict[str, tuple[int, int]]] = {
    "admin": {
        "create": (CREATED, CREATED),
        "get": (OK, OK),
        "update": (OK, OK),
        "status": (OK, OK),
        "assign": (OK, OK),
        "comment": (CREATED, CREATED),
        "delete": (NO_CONTENT, NO_CONTENT),
    },
    "rop": {
        "create": (CREATED, CREATED),
        "get": (OK, OK),
        "update": (OK, OK),
        "status": (OK, OK),
        "assign": (OK, OK),
        "comment": (CREATED, CREATED),
        "delete": (NO_CONTENT, NO_CONTENT),
    },
    "mop": {
        "create": (CREATED, CREATED),
        "get": (OK, OK),
        "update": (OK, OK),
        "status": (OK, OK),
        "assign": (OK, OK),
        "comment": (CREATED, CREATED),
        "delete": (FORBIDDEN, FORBIDDEN),
    },
    "seller": {
        "create": (FORBIDDEN, FORBIDDEN),
        "get": (OK, FORBIDDEN),
        "update": (OK, FORBIDDEN),
        "status": (OK, FORBIDDEN),
        "assign": (FORBIDDEN, FORBIDDEN),
        "comment": (CREATED, FORBIDDEN),
        "delete": (FORBIDDEN, FORBIDDEN),
    },
    "finance": {
        "create": (FORBIDDEN, FORBIDDEN),
        "get": (OK, OK),
        "update": (FORBIDDEN, FORBIDDEN),
        "status": (FORBIDDEN, FORBIDDEN),
        "assign": (FORBIDDEN, FORBIDDEN),
        "comment": (FORBIDDEN, FORBIDDEN),
        "delete": (FORBIDDEN, FORBIDDEN),
    },
}

Call = Callable[[httpx.AsyncClient, dict[str, str], dict[str, Any], Team], Awaitable[httpx.Response]]


def _other_seller(lead: dict[str, Any], team: Team) -> int:
    return team.seller2.id if lead["assigned_to"]["id"] == team.seller.id else team.seller.id


CALLS: dict[str, Call] = {
    "create": lambda c, h, lead, t: c.post(
        "/api/leads/create",
        json={"client_name": "Новый", "phone_number": f"+998 93 {lead['id']:07d}", "source": "Сайт"},
        headers=h,
    ),
    "get": lambda c, h, lead, t: c.get(f"/api/leads/{lead['id']}", headers=h),
    "update": lambda c, h, lead, t: c.patch(f"/api/leads/{lead['id']}", json={"notes": "изменено"}, headers=h),
    "status": lambda c, h, lead, t: c.patch(f"/api/leads/{lead['id']}", json={"status": "в работе"}, headers=h),
    "assign": lambda c, h, lead, t: c.post(
        f"/api/leads/{lead['id']}/assign", json={"assigned_to": _other_seller(lead, t)}, headers=h
    ),
    "comment": lambda c, h, lead, t: c.post(f"/api/leads/{lead['id']}/comment", json={"text": "привет"}, headers=h),
    "delete": lambda c, h, lead, t: c.delete(f"/api/leads/{lead['id']}", headers=h),
}


@pytest.mark.parametrize("role", list(TABLE))
async def test_permission_table(role: str, client: httpx.AsyncClient, team: Team, tokens: dict[str, str]) -> None:
    headers = bearer(tokens[role])
    seen: dict[str, tuple[int, int]] = {}
    phones = iter(range(10, 99))
    for endpoint, call in CALLS.items():
        statuses = []
        for owner in (team.seller, team.seller2):
            lead = await create_lead(client, tokens["admin"], phone=f"+99890{next(phones):07d}", assigned_to=owner.id)
            response = await call(client, headers, lead, team)
            statuses.append(response.status_code)
            if response.status_code == FORBIDDEN:
                assert response.json()["code"] == "forbidden"
                # Nothing changed: the lead reads as it was created.
                after = await client.get(f"/api/leads/{lead['id']}", headers=bearer(tokens["admin"]))
                assert after.status_code == OK
                body = after.json()
                assert (body["status"], body["notes"], body["comments"], body["assigned_to"]["id"]) == (
                    "новый",
                    None,
                    [],
                    owner.id,
                )
        seen[endpoint] = (statuses[0], statuses[1])
    assert seen == TABLE[role]


@pytest.mark.parametrize("role", list(TABLE))
async def test_list_shows_what_the_role_may_view(
    role: str, client: httpx.AsyncClient, team: Team, tokens: dict[str, str]
) -> None:
    own = await create_lead(client, tokens["admin"], phone="+998901110001", assigned_to=team.seller.id)
    other = await create_lead(client, tokens["admin"], phone="+998901110002", assigned_to=team.seller2.id)
    unassigned = await create_lead(client, tokens["admin"], phone="+998901110003")

    response = await client.get("/api/leads/", headers=bearer(tokens[role]))

    assert response.status_code == OK
    ids = [item["id"] for item in response.json()["items"]]
    expected = [own["id"]] if role == "seller" else [unassigned["id"], other["id"], own["id"]]
    assert ids == expected
    assert response.json()["total"] == len(expected)
