"""Every row of the reference's error table, reachable and correct; validation is 400, never 422 or 500."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Lead, LeadHistory, OutboxMessage
from db.uow import UnitOfWorkFactory
from tests.api_support import ISO_Z, bearer, create_lead, lead_body
from tests.conftest import Team

# ---- 400 ---------------------------------------------------------------------------------------------


async def test_bad_phone_names_the_field(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await client.post(
        "/api/leads/create", json=lead_body(phone="12-не-телефон"), headers=bearer(tokens["mop"])
    )

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"], body["reason"]) == ("invalid_input", "phone_number", "phone_invalid")
    assert body["message"]


async def test_phone_in_any_common_format_is_stored_as_e164(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"], phone="(90) 123-45-67")
    assert lead["phone_number"] == "+998901234567"
    lead = await create_lead(client, tokens["mop"], phone="998 93 765 43 21")
    assert lead["phone_number"] == "+998937654321"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone_number": "+998901234567", "source": "Instagram"}, "client_name"),
        (lead_body(budget="много"), "budget"),
        (lead_body(budget=-1), "budget"),
        (lead_body(source="Телепатия"), "source"),
        (lead_body(client_name="   "), "client_name"),
        (lead_body(assigned_to=2**70), "assigned_to"),
        (lead_body(assigned_to=6), "assigned_to"),  # the financier is not a salesperson
        (lead_body(extra="field"), "extra"),
    ],
)
async def test_invalid_create_bodies_are_400_naming_the_field(
    body: dict[str, object], field: str, client: httpx.AsyncClient, tokens: dict[str, str], team: Team
) -> None:
    response = await client.post("/api/leads/create", json=body, headers=bearer(tokens["mop"]))

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_input"
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/leads/?page=0", "page"),
        ("/api/leads/?size=1000", "size"),
        ("/api/leads/?status=потерян", "status"),
        ("/api/leads/?updated_since=вчера", "updated_since"),
        ("/api/leads/?q=a", "q"),
        ("/api/leads/0", "lead_id"),  # no digits ("/api/leads/abc") is no lead URL at all: 404
        (f"/api/leads/{2**64}", "lead_id"),
    ],
)
async def test_invalid_query_and_path_are_400(
    url: str, field: str, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    response = await client.get(url, headers=bearer(tokens["admin"]))

    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


async def test_lone_surrogate_is_400_not_500(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await client.post(
        "/api/leads/create",
        content=json.dumps(lead_body(client_name="\ud800")).encode(),
        headers={**bearer(tokens["mop"]), "Content-Type": "application/json"},
    )

    assert (response.status_code, response.json()["field"]) == (400, "client_name")


async def test_malformed_json_is_400(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await client.post(
        "/api/leads/create",
        content=b'{"client_name": ',
        headers={**bearer(tokens["mop"]), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_input"


async def test_a_move_the_lifecycle_forbids_is_400_naming_the_allowed(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    lead = await create_lead(client, tokens["mop"])

    response = await client.patch(f"/api/leads/{lead['id']}", json={"status": "закрыт"}, headers=bearer(tokens["mop"]))

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"], body["current"], body["allowed"]) == (
        "invalid_transition",
        "status",
        "новый",
        ["в работе", "отказ"],
    )


async def test_refusal_needs_a_reason(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"])
    url = f"/api/leads/{lead['id']}"

    refused = await client.patch(url, json={"status": "отказ"}, headers=bearer(tokens["mop"]))
    assert (refused.status_code, refused.json()["field"]) == (400, "refusal_reason")

    refused = await client.patch(
        url, json={"status": "отказ", "refusal_reason": "Дорого"}, headers=bearer(tokens["mop"])
    )
    assert refused.status_code == 200
    assert (refused.json()["status"], refused.json()["refusal_reason"]) == ("отказ", "Дорого")


async def test_a_failed_patch_changes_nothing(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"])
    url = f"/api/leads/{lead['id']}"

    response = await client.patch(url, json={"notes": "новые", "status": "закрыт"}, headers=bearer(tokens["mop"]))

    assert response.status_code == 400
    after = (await client.get(url, headers=bearer(tokens["mop"]))).json()
    assert after["notes"] is None
    assert [h["action"] for h in after["history"]] == ["created"]


# ---- 401 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer lb_nonsense"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": ""}],
)
async def test_no_or_bad_token_is_401(headers: dict[str, str], client: httpx.AsyncClient, team: Team) -> None:
    for method, url in (("GET", "/api/leads/"), ("GET", "/api/leads/1"), ("POST", "/api/leads/create")):
        response = await client.request(method, url, headers=headers, json=lead_body())
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_revoked_token_is_401(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    assert (await client.get("/api/leads/", headers=bearer(tokens["rop"]))).status_code == 200
    async with uow_factory() as uow:
        assert await uow.tokens.revoke_all(team.rop.user) == 1
        await uow.commit()

    assert (await client.get("/api/leads/", headers=bearer(tokens["rop"]))).status_code == 401


async def test_deactivated_users_tokens_stop_at_once(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    assert (await client.get("/api/leads/", headers=bearer(tokens["mop"]))).status_code == 200
    async with uow_factory() as uow:
        await uow.users.set_active(team.admin.user, team.mop.id, False)
        await uow.commit()

    assert (await client.get("/api/leads/", headers=bearer(tokens["mop"]))).status_code == 401

    async with uow_factory() as uow:
        await uow.users.set_active(team.admin.user, team.mop.id, True)
        await uow.commit()
    assert (await client.get("/api/leads/", headers=bearer(tokens["mop"]))).status_code == 200


async def test_health_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# ---- 403, 404, 409 -----------------------------------------------------------------------------------


async def test_another_salespersons_lead_is_403(client: httpx.AsyncClient, tokens: dict[str, str], team: Team) -> None:
    lead = await create_lead(client, tokens["mop"], assigned_to=team.seller2.id)

    response = await client.patch(f"/api/leads/{lead['id']}", json={"notes": "моё"}, headers=bearer(tokens["seller"]))

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_unknown_and_deleted_leads_are_404(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"])
    assert (await client.delete(f"/api/leads/{lead['id']}", headers=bearer(tokens["rop"]))).status_code == 204
    admin = bearer(tokens["admin"])

    for lead_id in (lead["id"], 999_999):
        for method, url, body in (
            ("GET", f"/api/leads/{lead_id}", None),
            ("PATCH", f"/api/leads/{lead_id}", {"notes": "x"}),
            ("POST", f"/api/leads/{lead_id}/comment", {"text": "x"}),
            ("POST", f"/api/leads/{lead_id}/assign", {"assigned_to": 4}),
            ("DELETE", f"/api/leads/{lead_id}", None),
        ):
            response = await client.request(method, url, json=body, headers=admin)
            assert response.status_code == 404, (method, url, response.text)
            assert response.json()["code"] == "not_found"
    listed = (await client.get("/api/leads/", headers=admin)).json()
    assert listed["total"] == 0


async def test_duplicate_phone_is_409_with_the_existing_id(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    first = await create_lead(client, tokens["mop"])

    response = await client.post(
        "/api/leads/create", json=lead_body(phone="90 123 45 67"), headers=bearer(tokens["rop"])
    )

    assert response.status_code == 409
    assert (response.json()["code"], response.json()["existing_lead_id"]) == ("duplicate", first["id"])
    # Changing another lead's phone to it is the same conflict.
    second = await create_lead(client, tokens["mop"], phone="+998907777777")
    response = await client.patch(
        f"/api/leads/{second['id']}", json={"phone_number": "+998901234567"}, headers=bearer(tokens["mop"])
    )
    assert (response.status_code, response.json()["existing_lead_id"]) == (409, first["id"])


async def test_unknown_route_and_method_answer_json(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    missing = await client.get("/api/nothing", headers=bearer(tokens["admin"]))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = await client.put("/api/leads/1", headers=bearer(tokens["admin"]))
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


# ---- one system: history, notifications, listing -----------------------------------------------------


async def test_http_changes_write_history_and_queue_notifications(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    lead = await create_lead(client, tokens["mop"], assigned_to=team.seller.id)
    url = f"/api/leads/{lead['id']}"
    await client.patch(url, json={"status": "в работе", "budget": 75000}, headers=bearer(tokens["seller"]))
    await client.post(f"{url}/assign", json={"assigned_to": team.seller2.id}, headers=bearer(tokens["rop"]))

    detail = (await client.get(url, headers=bearer(tokens["admin"]))).json()

    rows = [(h["action"], h["field"], h["old_value"], h["new_value"], h["changed_by"]) for h in detail["history"]]
    assert rows == [
        ("created", None, None, "новый", "Моп Сидоров"),
        ("assigned", None, None, "Продажник Иванов", "Моп Сидоров"),
        ("updated", "budget", None, "75000", "Продажник Иванов"),
        ("status_changed", None, "новый", "в работе", "Продажник Иванов"),
        ("assigned", None, "Продажник Иванов", "Второй Продажник", "Роп Петров"),
    ]
    assert all(ISO_Z.match(h["changed_at"]) for h in detail["history"])
    # The same notifications as in the bot: create_uow_factory attaches the outbox sink.
    async with uow_factory() as uow:
        queued = {(m.kind, m.chat_id) for m in (await uow.session.scalars(select(OutboxMessage))).all()}
    assert queued == {
        ("lead_new", team.seller.chat_id),
        ("lead_status", team.mop.chat_id),
        ("lead_status", team.rop.chat_id),
        ("lead_assigned", team.seller2.chat_id),
        ("lead_unassigned", team.seller.chat_id),
    }


async def test_paging_filters_search_and_sync(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    ids = []
    for n in range(25):
        owner = team.seller.id if n % 5 == 0 else None
        lead = await create_lead(
            client, tokens["mop"], phone=f"+9989011{n:05d}", client_name=f"Клиент {n}", assigned_to=owner
        )
        ids.append(lead["id"])
    admin = bearer(tokens["admin"])

    pages = [(await client.get("/api/leads/", params={"page": p, "size": 10}, headers=admin)).json() for p in (1, 3, 4)]

    assert [(p["total"], p["pages"], p["page"], p["size"], len(p["items"])) for p in pages] == [
        (25, 3, 1, 10, 10),
        (25, 3, 3, 10, 5),
        (25, 3, 4, 10, 0),
    ]
    assert [item["id"] for item in pages[0]["items"]] == ids[::-1][:10]
    mine = (await client.get("/api/leads/", params={"assigned_to": team.seller.id}, headers=admin)).json()
    assert [item["id"] for item in mine["items"]] == [ids[20], ids[15], ids[10], ids[5], ids[0]]
    found = (await client.get("/api/leads/", params={"q": "клиент 1"}, headers=admin)).json()
    assert sorted(item["client_name"] for item in found["items"]) == sorted(
        [f"Клиент {n}" for n in range(25) if str(n).startswith("1")]
    )
    # updated_since: only what changed at or after the moment given.
    async with uow_factory() as uow:
        moment = await uow.session.scalar(select(func.max(Lead.updated_at)))
        assert moment is not None
    await client.patch(f"/api/leads/{ids[3]}", json={"notes": "изменено"}, headers=admin)
    await client.patch(f"/api/leads/{ids[7]}", json={"notes": "изменено"}, headers=admin)
    since = moment.replace(tzinfo=None).isoformat() + "Z"
    synced = (await client.get("/api/leads/", params={"updated_since": since}, headers=admin)).json()
    assert {item["id"] for item in synced["items"]} >= {ids[3], ids[7]}
    assert synced["total"] < 25
    async with uow_factory() as uow:
        history = await uow.session.scalar(select(func.count()).select_from(LeadHistory))
    assert history == 25 + 5 + 2
