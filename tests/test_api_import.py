"""POST /api/leads/import: raw and multipart uploads, the dry run, the import, limits and permissions."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from db.models import Lead, OutboxMessage
from db.spreadsheets import MAX_FILE_BYTES, XLSX_TYPE
from db.uow import UnitOfWorkFactory
from tests.api_support import bearer
from tests.conftest import Team
from tests.import_support import EN_HEADER, RU_HEADER, csv_bytes, mixed_rows, xlsx

URL = "/api/leads/import"
TAKEN: list[str] = []


async def lead_count(factory: UnitOfWorkFactory) -> int:
    async with factory(read_only=True) as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Lead)) or 0)


def csv_headers(token: str) -> dict[str, str]:
    return {**bearer(token), "Content-Type": "text/csv; charset=windows-1251"}


async def test_dry_run_previews_a_raw_csv_and_saves_nothing(
    client: httpx.AsyncClient, tokens: dict[str, str], uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    data = csv_bytes(mixed_rows(RU_HEADER, seller="", seller2="", taken=TAKEN), encoding="cp1251", delimiter=";")
    response = await client.post(f"{URL}?dry_run=true", content=data, headers=csv_headers(tokens["mop"]))

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("dry_run", "format", "encoding", "rows", "to_create", "created")} == {
        "dry_run": True,
        "format": "csv",
        "encoding": "windows-1251",
        "rows": 97,
        "to_create": 82,
        "created": 0,
    }
    assert (body["duplicates"], body["duplicates_existing"], body["duplicates_in_file"], body["invalid"]) == (
        5,
        0,
        5,
        10,
    )
    bad = next(row for row in body["results"] if row["row"] == 85)
    assert (bad["outcome"], bad["column"], bad["reason"]) == ("invalid", "phone_number", "phone_invalid")
    assert await lead_count(uow_factory) == 0


async def test_a_multipart_xlsx_is_imported(
    client: httpx.AsyncClient, tokens: dict[str, str], uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    rows = mixed_rows(EN_HEADER, seller=str(team.seller.chat_id), seller2="", taken=TAKEN)
    files = {"file": ("leads.xlsx", xlsx(rows), XLSX_TYPE)}
    response = await client.post(URL, files=files, headers=bearer(tokens["admin"]))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["dry_run"], body["format"], body["created"], body["invalid"]) == (False, "xlsx", 82, 10)
    created = [row for row in body["results"] if row["outcome"] == "created"]
    assert len(created) == 82 and all(row["lead_id"] for row in created)
    assert await lead_count(uow_factory) == 82
    async with uow_factory(read_only=True) as uow:
        outbox = (await uow.session.scalars(select(OutboxMessage))).all()
    assert [(m.user_id, m.kind) for m in outbox] == [(team.seller.id, "import_summary")]


async def test_raw_xlsx_body(client: httpx.AsyncClient, tokens: dict[str, str], team: Team) -> None:
    data = xlsx([["Client", "Phone number", "Source"], ["Анна", "901234567", "Сайт"]])
    response = await client.post(URL, content=data, headers={**bearer(tokens["rop"]), "Content-Type": XLSX_TYPE})
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1


async def test_refusals(
    client: httpx.AsyncClient, tokens: dict[str, str], uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    data = csv_bytes([EN_HEADER, ["Анна", "901234567", "Сайт"]])
    assert (await client.post(URL, content=data, headers={"Content-Type": "text/csv"})).status_code == 401
    seller = await client.post(URL, content=data, headers=csv_headers(tokens["seller"]))
    assert seller.status_code == 403

    broken = await client.post(URL, content=b"PK\x03\x04broken", headers=csv_headers(tokens["admin"]))
    assert broken.status_code == 400
    assert (broken.json()["field"], broken.json()["reason"]) == ("file", "import_malformed")

    no_field = await client.post(URL, files={"other": ("a.csv", data, "text/csv")}, headers=bearer(tokens["admin"]))
    assert no_field.status_code == 400

    # Larger than the API's usual body limit but within the file limit: read (and refused for its content).
    big = b"name,phone\n" + b"x" * (2 * 1024 * 1024)
    assert (await client.post(URL, content=big, headers=csv_headers(tokens["admin"]))).status_code == 400
    too_big = b"x" * (MAX_FILE_BYTES + 128 * 1024)
    assert (await client.post(URL, content=too_big, headers=csv_headers(tokens["admin"]))).status_code == 413
    assert await lead_count(uow_factory) == 0
