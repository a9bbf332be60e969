"""Strict input: text has no control characters and something visible, numbers are numbers, times are
ISO 8601, and a PATCH that cannot change what it names says so."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import Lead
from db.uow import UnitOfWorkFactory
from tests.api_support import bearer, create_lead, lead_body
from tests.conftest import Team

# ---- text ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("client_name", "Иван\x00", "text_control_character"),
        ("client_name", "\x1b[31mИван", "text_control_character"),
        ("client_name", "Ива\x07н", "text_control_character"),
        ("client_name", "Иван\r", "text_control_character"),
        ("client_name", "\x7f", "text_control_character"),
        ("client_name", "\x00\x00", "text_control_character"),
        ("client_name", "\u200b\u200b", "text_invisible"),
        ("client_name", "\u200c\u200d\u2060\ufeff", "text_invisible"),
        ("client_name", " \t\n ", "text_empty"),
        ("notes", "ok\x00", "text_control_character"),
        ("source", "Insta\x00gram", "text_control_character"),
    ],
)
async def test_text_with_control_or_only_invisible_characters_is_400(
    field: str,
    value: str,
    reason: str,
    client: httpx.AsyncClient,
    tokens: dict[str, str],
    uow_factory: UnitOfWorkFactory,
) -> None:
    response = await client.post("/api/leads/create", json=lead_body(**{field: value}), headers=bearer(tokens["mop"]))

    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["code"], body["field"], body["reason"]) == ("invalid_input", field, reason)
    async with uow_factory() as uow:
        assert (await uow.session.scalars(select(Lead))).all() == []


async def test_newline_and_tab_are_kept(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"], notes="Первая строка\n\tвторая")
    assert lead["notes"] == "Первая строка\n\tвторая"


async def test_blank_optional_text_is_none(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"], notes="\u200b ")
    assert lead["notes"] is None


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/leads/{id}/comment", {"text": "\u200b"}),
        ("/api/leads/{id}/comment", {"text": "ok\x00"}),
        ("/api/leads/{id}", {"notes": "\x1b"}),
        ("/api/leads/{id}", {"client_name": "\ufeff"}),
        ("/api/leads/{id}", {"status": "отказ", "refusal_reason": "\u2060"}),
    ],
)
async def test_every_text_field_follows_the_rule(
    url: str, body: dict[str, Any], client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    lead = await create_lead(client, tokens["mop"])
    method = "POST" if url.endswith("comment") else "PATCH"

    response = await client.request(method, url.format(id=lead["id"]), json=body, headers=bearer(tokens["mop"]))

    assert response.status_code == 400, response.text
    assert response.json()["reason"] in ("text_empty", "text_invisible", "text_control_character")


async def test_webhook_text_follows_the_rule(client: httpx.AsyncClient) -> None:
    from tests.api_support import WEBHOOK_SECRET

    response = await client.post(
        "/api/leads/webhook/Сайт",
        json={"client_name": "\u200b", "phone_number": "+998905554433"},
        headers={"X-Webhook-Secret": WEBHOOK_SECRET},
    )
    assert (response.status_code, response.json()["field"]) == (400, "client_name")


@pytest.mark.parametrize("q", ["\x00\x00", "%\x00", "ab\x00", "\u200b\u200b"])
async def test_search_text_follows_the_rule(q: str, client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    await create_lead(client, tokens["mop"])

    response = await client.get("/api/leads/", params={"q": q}, headers=bearer(tokens["admin"]))

    assert response.status_code == 400, response.text
    assert response.json()["field"] == "q"


# ---- numbers -------------------------------------------------------------------------------------------

STRICT_REASON = {"budget": "float_type", "assigned_to": "int_type"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("budget", True),
        ("budget", False),
        ("budget", "50000"),
        ("budget", "1e3"),
        ("assigned_to", True),
        ("assigned_to", "4"),
        ("assigned_to", 4.0),
    ],
)
async def test_numbers_are_json_numbers(
    field: str, value: Any, client: httpx.AsyncClient, tokens: dict[str, str], team: Team
) -> None:
    response = await client.post("/api/leads/create", json=lead_body(**{field: value}), headers=bearer(tokens["mop"]))

    assert response.status_code == 400, response.text
    # Refused as the wrong type, not coerced (true would be user 1, "4" user 4) and refused later.
    assert (response.json()["field"], response.json()["reason"]) == (field, STRICT_REASON[field])


async def test_budget_numbers_still_work(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    assert (await create_lead(client, tokens["mop"], budget=50000))["budget"] == 50000
    assert (await create_lead(client, tokens["mop"], phone="+998907777777", budget=1500.5))["budget"] == 1500.5


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/leads/{id}", {"budget": True}, "budget"),
        ("/api/leads/{id}", {"budget": "7"}, "budget"),
        ("/api/leads/{id}", {"assigned_to": True}, "assigned_to"),
        ("/api/leads/{id}/assign", {"assigned_to": "4"}, "assigned_to"),
        ("/api/leads/{id}/assign", {"assigned_to": True}, "assigned_to"),
    ],
)
async def test_numbers_are_strict_on_every_route(
    url: str, body: dict[str, Any], field: str, client: httpx.AsyncClient, tokens: dict[str, str], team: Team
) -> None:
    lead = await create_lead(client, tokens["mop"])
    method = "POST" if url.endswith("assign") else "PATCH"

    response = await client.request(method, url.format(id=lead["id"]), json=body, headers=bearer(tokens["mop"]))

    assert (response.status_code, response.json()["field"]) == (400, field)
    assert response.json()["reason"] == STRICT_REASON[field]


# ---- updated_since -------------------------------------------------------------------------------------


@pytest.mark.parametrize("since", ["0.5", "0", "1700000000", "-1", "1e9"])
async def test_updated_since_is_not_a_unix_time(since: str, client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    response = await client.get("/api/leads/", params={"updated_since": since}, headers=bearer(tokens["admin"]))

    assert response.status_code == 400, response.text
    assert response.json()["field"] == "updated_since"


@pytest.mark.parametrize(
    "since", ["2025-12-03T10:00:00Z", "2025-12-03T10:00:00+05:00", "2025-12-03T10:00:00.123456", "2025-12-03"]
)
async def test_updated_since_takes_iso_8601(since: str, client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"])

    response = await client.get("/api/leads/", params={"updated_since": since}, headers=bearer(tokens["admin"]))

    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [lead["id"]]


# ---- PATCH ---------------------------------------------------------------------------------------------


async def test_a_reason_without_a_refusal_is_400_and_changes_nothing(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    lead = await create_lead(client, tokens["mop"])
    url = f"/api/leads/{lead['id']}"

    for body in (
        {"refusal_reason": "Дорого"},
        {"refusal_reason": "Дорого", "status": "в работе"},
        {"refusal_reason": "Дорого", "notes": "другое"},
    ):
        response = await client.patch(url, json=body, headers=bearer(tokens["mop"]))
        assert response.status_code == 400, (body, response.text)
        assert (response.json()["field"], response.json()["reason"]) == ("refusal_reason", "reason_without_refusal")

    after = (await client.get(url, headers=bearer(tokens["mop"]))).json()
    assert (after["status"], after["notes"], after["refusal_reason"]) == ("новый", None, None)
    assert [h["action"] for h in after["history"]] == ["created"]


async def test_a_refused_leads_reason_cannot_change_by_itself(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    lead = await create_lead(client, tokens["mop"])
    url = f"/api/leads/{lead['id']}"
    refuse = {"status": "отказ", "refusal_reason": "Дорого"}
    assert (await client.patch(url, json=refuse, headers=bearer(tokens["mop"]))).status_code == 200

    # The same form sent again (a retry, or a form that sends every field) is fine and changes nothing.
    again = await client.patch(url, json=refuse, headers=bearer(tokens["mop"]))
    other = await client.patch(url, json={**refuse, "refusal_reason": "Далеко"}, headers=bearer(tokens["mop"]))

    assert again.status_code == 200
    assert (other.status_code, other.json()["field"]) == (400, "refusal_reason")
    assert (await client.get(url, headers=bearer(tokens["mop"]))).json()["refusal_reason"] == "Дорого"


async def test_an_empty_patch_is_400(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"])

    response = await client.patch(f"/api/leads/{lead['id']}", json={}, headers=bearer(tokens["mop"]))

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["reason"]) == ("invalid_input", "nothing_to_change")
    assert "field" not in response.json()


async def test_a_patch_with_changes_and_the_current_status_still_works(
    client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    lead = await create_lead(client, tokens["mop"])

    response = await client.patch(
        f"/api/leads/{lead['id']}",
        json={"status": "новый", "refusal_reason": None, "notes": "звонил"},
        headers=bearer(tokens["mop"]),
    )

    assert response.status_code == 200, response.text
    assert response.json()["notes"] == "звонил"


# ---- dates and query numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "86400", "1700006400", "20251205", "2025-12-05T10:00:00", True, 0])
async def test_a_closing_date_is_an_iso_date_not_a_unix_time(
    value: Any, client: httpx.AsyncClient, tokens: dict[str, str]
) -> None:
    lead = await create_lead(client, tokens["mop"])
    url = f"/api/leads/{lead['id']}"

    response = await client.patch(url, json={"closing_date": value}, headers=bearer(tokens["mop"]))

    assert (response.status_code, response.json().get("field")) == (400, "closing_date"), response.text
    assert (await client.get(url, headers=bearer(tokens["mop"]))).json()["closing_date"] is None


async def test_a_closing_date_takes_an_iso_date(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    lead = await create_lead(client, tokens["mop"])
    response = await client.patch(
        f"/api/leads/{lead['id']}", json={"closing_date": "2025-12-05"}, headers=bearer(tokens["mop"])
    )
    assert (response.status_code, response.json()["closing_date"]) == (200, "2025-12-05")


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        ("/api/analytics/summary", {"from": "0", "to": "2026-11-30"}, "from"),
        ("/api/analytics/summary", {"from": "2026-11-01", "to": "86400"}, "to"),
        ("/api/analytics/report.pdf", {"from": "0", "to": "86400"}, "from"),
        ("/api/leads/export.xlsx", {"from": "0"}, "from"),
        ("/api/leads/export.xlsx", {"to": "2026-11-30T00:00:00"}, "to"),
        ("/api/leads/", {"page": "1.0"}, "page"),
        ("/api/leads/", {"size": " 5"}, "size"),
        ("/api/leads/", {"assigned_to": "4.0"}, "assigned_to"),
        ("/api/leads/export.xlsx", {"assigned_to": "+4"}, "assigned_to"),
    ],
)
async def test_query_dates_and_numbers_are_strict(
    url: str, params: dict[str, str], field: str, client: httpx.AsyncClient, tokens: dict[str, str], team: Team
) -> None:
    response = await client.get(url, params=params, headers=bearer(tokens["admin"]))

    assert (response.status_code, response.json().get("field")) == (400, field), response.text


async def test_a_null_reason_alone_is_400_naming_it(client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
    # It changes nothing: a reason cannot be cleared by itself, on a refused lead or any other.
    lead = await create_lead(client, tokens["mop"])
    url = f"/api/leads/{lead['id']}"
    refused = await client.patch(
        url, json={"status": "отказ", "refusal_reason": "Дорого"}, headers=bearer(tokens["mop"])
    )
    other = await create_lead(client, tokens["mop"], phone="+998907777777")

    for target in (url, f"/api/leads/{other['id']}"):
        response = await client.patch(target, json={"refusal_reason": None}, headers=bearer(tokens["mop"]))
        assert response.status_code == 400, response.text
        assert (response.json()["field"], response.json()["reason"]) == ("refusal_reason", "reason_without_refusal")
    assert refused.status_code == 200
    assert (await client.get(url, headers=bearer(tokens["mop"]))).json()["refusal_reason"] == "Дорого"
