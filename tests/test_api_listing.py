"""Paged listing stays exact while its remembered totals and keyset anchors are in use."""

from __future__ import annotations

import httpx

from tests.api_support import bearer, create_lead
from tests.conftest import Team


async def walk(client: httpx.AsyncClient, token: str, size: int, **params: object) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    totals: list[int] = []
    page = 1
    while True:
        body = (
            await client.get("/api/leads/", params={"page": page, "size": size, **params}, headers=bearer(token))
        ).json()
        totals.append(body["total"])
        if not body["items"]:
            return ids, totals
        ids += [item["id"] for item in body["items"]]
        page += 1


async def test_pages_stay_exact_across_changes(client: httpx.AsyncClient, tokens: dict[str, str], team: Team) -> None:
    admin = tokens["admin"]
    created = [
        (await create_lead(client, admin, phone=f"+9989022{n:05d}", assigned_to=team.seller.id if n % 3 else None))[
            "id"
        ]
        for n in range(23)
    ]
    expected = created[::-1]

    for _ in range(2):  # the second walk runs on the remembered total and anchors
        ids, totals = await walk(client, admin, 5)
        assert ids == expected
        assert set(totals) == {23}
    # A deleted lead on page 1 shifts every later page by one.
    assert (await client.delete(f"/api/leads/{expected[2]}", headers=bearer(admin))).status_code == 204
    expected.remove(expected[2])
    ids, totals = await walk(client, admin, 5)
    assert (ids, set(totals)) == (expected, {22})
    # A new lead comes first and pushes the rest down.
    newest = (await create_lead(client, admin, phone="+998902299999"))["id"]
    expected.insert(0, newest)
    ids, totals = await walk(client, admin, 5)
    assert (ids, set(totals)) == (expected, {23})
    # A deep page asked first, then the page before it (anchors only ever seek forward from below).
    deep = (await client.get("/api/leads/", params={"page": 4, "size": 5}, headers=bearer(admin))).json()
    before = (await client.get("/api/leads/", params={"page": 3, "size": 5}, headers=bearer(admin))).json()
    assert [i["id"] for i in deep["items"]] == expected[15:20]
    assert [i["id"] for i in before["items"]] == expected[10:15]
    # A salesperson's listing is their own, with their own total; reassigning changes it at once.
    own = [i for i in expected if i in {created[n] for n in range(23) if n % 3}]
    ids, totals = await walk(client, tokens["seller"], 4)
    assert (ids, set(totals)) == (own, {len(own)})
    await client.post(f"/api/leads/{own[0]}/assign", json={"assigned_to": team.seller2.id}, headers=bearer(admin))
    ids, totals = await walk(client, tokens["seller"], 4)
    assert (ids, set(totals)) == (own[1:], {len(own) - 1})
