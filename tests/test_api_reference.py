"""The reference's examples replayed verbatim against the app, responses checked field by field.

The team here is built so the reference's ids mean what they say: user 5 is the salesperson
«Продажник Иванов», user 7 another active salesperson, and the next lead created gets id 123.
The JavaScript examples are ported call for call; the only change is the Authorization header the
front end must add.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.enums import LeadStatus, Role
from db.models import Lead, LeadHistory, User, utcnow
from db.sql import follow_explicit_ids
from db.uow import UnitOfWorkFactory
from tests.api_support import ISO_Z, bearer, issue

CREATE_REQUEST = {
    "client_name": "Иван Петров",
    "phone_number": "+998901234567",
    "source": "Instagram",
    "budget": 50000,
    "notes": "Интересуется 2-комнатной квартирой",
    "assigned_to": 5,
}
CREATE_RESPONSE = {
    "id": 123,
    "client_name": "Иван Петров",
    "phone_number": "+998901234567",
    "status": "новый",
    "source": "Instagram",
    "created_at": "2025-12-03T10:00:00Z",
    "assigned_to": {"id": 5, "first_name": "Продажник", "last_name": "Иванов"},
}
DETAIL_RESPONSE = {
    "id": 123,
    "client_name": "Иван Петров",
    "phone_number": "+998901234567",
    "status": "в работе",
    "source": "Instagram",
    "budget": 50000,
    "notes": "Интересуется 2-комнатной квартирой",
    "created_at": "2025-12-03T10:00:00Z",
    "updated_at": "2025-12-03T14:30:00Z",
    "assigned_to": {"id": 5, "first_name": "Продажник", "last_name": "Иванов"},
    "comments": [
        {
            "id": 1,
            "text": "Позвонил клиенту, договорились на встречу",
            "created_by": "Продажник Иванов",
            "created_at": "2025-12-03T11:00:00Z",
        }
    ],
    "history": [
        {
            "action": "status_changed",
            "old_value": "новый",
            "new_value": "в работе",
            "changed_by": "Продажник Иванов",
            "changed_at": "2025-12-03T10:30:00Z",
        }
    ],
}
PATCH_REQUEST = {"status": "закрыт", "notes": "Клиент купил квартиру №45", "closing_date": "2025-12-05"}
ASSIGN_REQUEST = {"assigned_to": 7}
COMMENT_REQUEST = {"text": "Клиент попросил отправить планировки"}
COMMENT_RESPONSE = {
    "id": 15,
    "text": "Клиент попросил отправить планировки",
    "created_by": {"id": 5, "first_name": "Продажник", "last_name": "Иванов"},
    "created_at": "2025-12-03T15:00:00Z",
}
TIMESTAMPS = {"created_at", "updated_at", "changed_at"}


def assert_shape(actual: Any, expected: Any, path: str = "$") -> None:
    """Every field the reference shows is there, with its value (timestamps: the format)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            if key in TIMESTAMPS:
                assert isinstance(actual[key], str) and ISO_Z.match(actual[key]), f"{path}.{key}: {actual[key]!r}"
            else:
                assert_shape(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_shape(a, e, f"{path}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{path}: {actual!r} != {expected!r}"


@dataclass
class RefTeam:
    manager: str
    seller5: str
    seller7: str
    admin: str


@pytest.fixture
async def ref(uow_factory: UnitOfWorkFactory) -> RefTeam:
    async with uow_factory() as uow:
        people = [
            User(id=1, telegram_id=2001, role=Role.ADMIN, first_name="Админ", is_active=True),
            User(id=2, telegram_id=2002, role=Role.MOP, first_name="Менеджер", last_name="Мопов", is_active=True),
            User(id=5, telegram_id=2005, role=Role.SELLER, first_name="Продажник", last_name="Иванов", is_active=True),
            User(id=7, telegram_id=2007, role=Role.SELLER, first_name="Продажник", last_name="Петров", is_active=True),
        ]
        uow.session.add_all(people)
        # A deleted lead #122, so the next one created is #123 as in the reference.
        now = utcnow()
        uow.session.add(
            Lead(
                id=122,
                client_name="placeholder",
                phone_number="+998900000000",
                source="Сайт",
                status=LeadStatus.NEW,
                created_by_id=1,
                created_at=now,
                updated_at=now,
                deleted_at=now,
            )
        )
        await uow.session.flush()
        await follow_explicit_ids(uow.session, [User.__table__, Lead.__table__])  # type: ignore[list-item]
        await uow.commit()
    return RefTeam(
        manager=await issue(uow_factory, people[1]),
        seller5=await issue(uow_factory, people[2]),
        seller7=await issue(uow_factory, people[3]),
        admin=await issue(uow_factory, people[0]),
    )


async def create_reference_lead(client: httpx.AsyncClient, ref: RefTeam) -> dict[str, Any]:
    response = await client.post("/api/leads/create", json=CREATE_REQUEST, headers=bearer(ref.manager))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_create_example(client: httpx.AsyncClient, ref: RefTeam) -> None:
    lead = await create_reference_lead(client, ref)
    assert_shape(lead, CREATE_RESPONSE)


async def test_detail_example(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)
    # What the reference's detail shows happened: the salesperson took it into work and commented.
    moved = await client.patch("/api/leads/123", json={"status": "в работе"}, headers=bearer(ref.seller5))
    assert moved.status_code == 200, moved.text
    commented = await client.post(
        "/api/leads/123/comment",
        json={"text": "Позвонил клиенту, договорились на встречу"},
        headers=bearer(ref.seller5),
    )
    assert commented.status_code == 201, commented.text

    detail = (await client.get("/api/leads/123", headers=bearer(ref.seller5))).json()

    expected = dict(DETAIL_RESPONSE)
    history = [row for row in detail["history"] if row["action"] == "status_changed"]
    assert_shape({**detail, "history": history}, expected)
    # The rest of the history is the creation and the assignment at creation.
    assert [row["action"] for row in detail["history"]] == ["created", "assigned", "status_changed"]
    # Addition: the Meta lead ad the lead came from; this one came from none.
    assert detail["meta"] is None
    assert detail["history"][1]["new_value"] == "Продажник Иванов"
    # budget is a number written as the reference writes it: 50000, not 50000.0
    assert '"budget":50000,' in (await client.get("/api/leads/123", headers=bearer(ref.seller5))).text


async def test_list_example(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)
    await client.patch("/api/leads/123", json={"status": "в работе"}, headers=bearer(ref.seller5))

    page = (await client.get("/api/leads/", params={"status": "в работе"}, headers=bearer(ref.manager))).json()

    item = {k: v for k, v in DETAIL_RESPONSE.items() if k in CREATE_RESPONSE and k != "assigned_to"}
    assert_shape(page, {"items": [item], "total": 1, "page": 1, "size": 20, "pages": 1})


async def test_patch_example(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)
    await client.patch("/api/leads/123", json={"status": "в работе"}, headers=bearer(ref.seller5))

    response = await client.patch("/api/leads/123", json=PATCH_REQUEST, headers=bearer(ref.seller5))

    assert response.status_code == 200, response.text
    assert_shape(response.json(), {**PATCH_REQUEST, "id": 123, "assigned_to": CREATE_RESPONSE["assigned_to"]})
    actions = [(h["action"], h["field"], h["new_value"]) for h in response.json()["history"]][-3:]
    assert actions == [
        ("updated", "notes", "Клиент купил квартиру №45"),
        ("updated", "closing_date", "2025-12-05"),
        ("status_changed", None, "закрыт"),
    ]


async def test_assign_example(client: httpx.AsyncClient, ref: RefTeam, uow_factory: UnitOfWorkFactory) -> None:
    await create_reference_lead(client, ref)

    response = await client.post("/api/leads/123/assign", json=ASSIGN_REQUEST, headers=bearer(ref.manager))

    assert response.status_code == 200, response.text
    assert_shape(response.json()["assigned_to"], {"id": 7, "first_name": "Продажник", "last_name": "Петров"})
    assert (await client.get("/api/leads/123", headers=bearer(ref.seller5))).status_code == 403
    assert (await client.get("/api/leads/123", headers=bearer(ref.seller7))).status_code == 200
    async with uow_factory() as uow:
        last = await uow.session.scalar(select(LeadHistory).order_by(LeadHistory.id.desc()).limit(1))
    assert last is not None
    assert (last.action, last.old_value, last.new_value) == ("assigned", "Продажник Иванов", "Продажник Петров")


async def test_comment_example(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)

    response = await client.post("/api/leads/123/comment", json=COMMENT_REQUEST, headers=bearer(ref.seller5))

    assert response.status_code == 201, response.text
    assert_shape(response.json(), {**COMMENT_RESPONSE, "id": 1})


async def test_delete_is_for_admin_and_rop(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)

    assert (await client.delete("/api/leads/123", headers=bearer(ref.manager))).status_code == 403
    assert (await client.delete("/api/leads/123", headers=bearer(ref.admin))).status_code == 204
    assert (await client.get("/api/leads/123", headers=bearer(ref.admin))).status_code == 404


# ---- the JavaScript examples, call for call -------------------------------------------------------


class Fetch:
    """``fetch(url, {method, headers, body})`` as the reference's front end calls it, plus the token."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    async def __call__(self, url: str, options: dict[str, Any]) -> httpx.Response:
        headers = {**options["headers"], **bearer(self.token)}
        return await self.client.request(options["method"], url, headers=headers, content=options["body"])


async def js_create_lead(fetch: Fetch, data: dict[str, Any]) -> dict[str, Any]:
    response = await fetch(
        "/api/leads/create",
        {
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(
                {
                    "client_name": data["name"],
                    "phone_number": data["phone"],
                    "source": data["source"],
                    "budget": data["budget"],
                    "notes": data["notes"],
                    "assigned_to": data["sellerId"],
                }
            ),
        },
    )
    if not response.is_success:
        raise AssertionError("Ошибка создания лида")
    result: dict[str, Any] = response.json()
    return result


async def js_update_lead_status(fetch: Fetch, lead_id: int, new_status: str) -> dict[str, Any]:
    response = await fetch(
        f"/api/leads/{lead_id}",
        {
            "method": "PATCH",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"status": new_status}),
        },
    )
    result: dict[str, Any] = response.json()
    return result


async def js_add_comment(fetch: Fetch, lead_id: int, text: str) -> dict[str, Any]:
    response = await fetch(
        f"/api/leads/{lead_id}/comment",
        {"method": "POST", "headers": {"Content-Type": "application/json"}, "body": json.dumps({"text": text})},
    )
    result: dict[str, Any] = response.json()
    return result


async def test_js_create_lead(client: httpx.AsyncClient, ref: RefTeam) -> None:
    lead = await js_create_lead(
        Fetch(client, ref.manager),
        {
            "name": "Иван Петров",
            "phone": "+998901234567",
            "source": "Instagram",
            "budget": 50000,
            "notes": "Звонил по объявлению",
            "sellerId": 5,
        },
    )
    assert lead["id"] == 123
    assert_shape(lead, {**CREATE_RESPONSE, "notes": "Звонил по объявлению", "budget": 50000})


async def test_js_update_lead_status(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)
    fetch = Fetch(client, ref.seller5)
    await js_update_lead_status(fetch, 123, "в работе")

    lead = await js_update_lead_status(fetch, 123, "закрыт")

    assert_shape(lead, {"id": 123, "status": "закрыт"})
    assert lead["history"][-1]["new_value"] == "закрыт"
    assert lead["closing_date"] is not None


async def test_js_add_comment(client: httpx.AsyncClient, ref: RefTeam) -> None:
    await create_reference_lead(client, ref)

    comment = await js_add_comment(Fetch(client, ref.seller5), 123, "Клиент попросил перезвонить завтра")

    assert_shape(comment, {**COMMENT_RESPONSE, "id": 1, "text": "Клиент попросил перезвонить завтра"})
