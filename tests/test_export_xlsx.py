"""The Excel export (/export and GET /api/leads/export.xlsx), read back with openpyxl and compared with
the database."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openpyxl
import pytest
from aiogram.methods import SendDocument
from aiogram.types import FSInputFile
from sqlalchemy import select

from db.enums import LeadStatus
from db.exports import export_batches
from db.models import Lead, User, person_name
from db.repositories import LeadFilter
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import LeadListAction, LeadListCB
from tests.analytics_data import simulate, store
from tests.api_support import bearer
from tests.conftest import Harness, Team

TZ = ZoneInfo("Asia/Tashkent")
HEADERS_RU = [
    "№",
    "Клиент",
    "Телефон",
    "Статус",
    "Источник",
    "Бюджет",
    "Продажник",
    "ID продажника",
    "Создал",
    "Создан",
    "Изменён",
    "Дата закрытия",
    "Причина отказа",
    "Заметки",
]


@pytest.fixture
async def generated(team: Team, uow_factory: UnitOfWorkFactory) -> None:
    leads = simulate(seed=7, count=60, sellers=[team.seller.id, team.seller2.id], heads=[team.rop.id])
    await store(uow_factory, leads, created_by=team.rop.id)
    async with uow_factory() as uow:
        # Text that must stay text: a formula, a long note, a closing date.
        lead = await uow.session.get(Lead, 3)
        assert lead is not None
        lead.notes = '=HYPERLINK("http://evil")\nвторая строка'
        lead.closing_date = date(2026, 11, 20)
        await uow.commit()


async def expected_rows(uow_factory: UnitOfWorkFactory, **where: Any) -> list[list[Any]]:
    """Every live lead (newest first) as the sheet should show it, from the database."""
    async with uow_factory(read_only=True) as uow:
        users = {u.id: u for u in (await uow.session.scalars(select(User))).all()}
        stmt = select(Lead).where(Lead.deleted_at.is_(None)).filter_by(**where).order_by(Lead.id.desc())
        leads = (await uow.session.scalars(stmt)).unique().all()
    statuses = {"новый": "новый", "в работе": "в работе", "закрыт": "закрыт", "отказ": "отказ"}

    def local(moment: datetime) -> datetime:
        return moment.astimezone(TZ).replace(tzinfo=None, microsecond=0)

    rows = []
    for lead in leads:
        seller = users.get(lead.assigned_to_id) if lead.assigned_to_id else None
        creator = users[lead.created_by_id]
        rows.append(
            [
                lead.id,
                lead.client_name,
                lead.phone_number,
                statuses[lead.status],
                lead.source,
                lead.budget,
                person_name(seller.first_name, seller.last_name, seller.id) if seller else None,
                lead.assigned_to_id,
                person_name(creator.first_name, creator.last_name, creator.id),
                local(lead.created_at),
                local(lead.updated_at),
                datetime.combine(lead.closing_date, datetime.min.time()) if lead.closing_date else None,
                lead.refusal_reason,
                lead.notes,
            ]
        )
    return rows


def read_sheet(data: bytes) -> tuple[Any, list[list[Any]]]:
    book = openpyxl.load_workbook(io.BytesIO(data))
    sheet = book.worksheets[0]
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    for row in rows[1:]:
        for index in (9, 10):  # Excel keeps milliseconds; the comparison is to the second
            if isinstance(row[index], datetime):
                row[index] = row[index].replace(microsecond=0)
    return book, rows


def check_layout(book: Any, rows: list[list[Any]]) -> None:
    sheet = book.worksheets[0]
    assert rows[0] == HEADERS_RU
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:N{max(len(rows), 2)}"
    assert sheet.column_dimensions["B"].width > 8
    assert sheet["F2"].number_format == '#,##0.00 "USD"'
    assert sheet["J2"].number_format == "dd.mm.yyyy hh:mm"
    analytics = book.worksheets[1]
    assert analytics.title == "Аналитика"
    assert analytics["A1"].value == "Отчёт по продажам"


def file_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def file_exists(path: str | Path) -> bool:
    return Path(path).exists()


async def capture_documents(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The files the bot sends, read as they leave (the bot removes them afterwards)."""
    sent: list[bytes] = []
    original = harness.session.make_request

    async def make_request(bot: Any, method: Any, *rest: Any, **named: Any) -> Any:
        if isinstance(method, SendDocument) and isinstance(method.document, FSInputFile):
            sent.append(file_bytes(method.document.path))
        return await original(bot, method, *rest, **named)

    monkeypatch.setattr(harness.session, "make_request", make_request)
    return sent


async def test_bot_export_matches_the_database(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory, generated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = await capture_documents(harness, monkeypatch)
    await harness.send(team.rop, "/export")
    assert len(sent) == 1
    document = harness.session.of(SendDocument)[-1]
    assert isinstance(document.document, FSInputFile) and not file_exists(document.document.path)
    assert document.document.filename is not None and document.document.filename.endswith(".xlsx")
    book, rows = read_sheet(sent[0])
    check_layout(book, rows)
    expected = await expected_rows(uow_factory)
    assert rows[1:] == expected
    assert len(expected) > 40
    assert f"лидов — {len(expected)}" in (document.caption or "")
    # The formula stays text.
    formula = next(row for row in rows if row[0] == 3)
    assert formula[13].startswith("=HYPERLINK")
    assert book.worksheets[0].cell(row=rows.index(formula) + 1, column=14).data_type == "s"


async def test_a_salesperson_exports_only_their_own(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory, generated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = await capture_documents(harness, monkeypatch)
    await harness.send(team.seller, "/export")
    _book, rows = read_sheet(sent[0])
    expected = await expected_rows(uow_factory, assigned_to_id=team.seller.id)
    assert rows[1:] == expected and expected


async def test_api_export_with_the_lists_filters(
    client: httpx.AsyncClient, tokens: dict[str, str], uow_factory: UnitOfWorkFactory, generated: None
) -> None:
    response = await client.get(
        "/api/leads/export.xlsx",
        params={"status": "отказ", "from": "2026-11-01", "to": "2026-11-30"},
        headers=bearer(tokens["mop"]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert "attachment" in response.headers["content-disposition"]
    book, rows = read_sheet(response.content)
    expected = await expected_rows(uow_factory, status=LeadStatus.REFUSED)
    assert rows[1:] == expected and expected
    assert book.worksheets[1]["A2"].value.startswith("Период: 01.11.2026 — 30.11.2026")

    response = await client.get("/api/leads/export.xlsx", headers=bearer(tokens["seller"]))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "params",
    [{"from": "2026-12-01", "to": "2026-11-01"}, {"to": "0001-01-01"}, {"status": "x"}, {"q": "a"}],
)
async def test_api_export_refuses_bad_input(
    client: httpx.AsyncClient, tokens: dict[str, str], params: dict[str, str]
) -> None:
    response = await client.get("/api/leads/export.xlsx", params=params, headers=bearer(tokens["rop"]))
    assert response.status_code == 400, response.text


async def test_batches_cover_every_lead_once(team: Team, uow_factory: UnitOfWorkFactory, generated: None) -> None:
    async with uow_factory(read_only=True) as uow:
        batches = [batch async for batch in export_batches(uow.session, uow.leads, team.rop.user, LeadFilter(), size=7)]
        total = await uow.session.scalar(select(Lead.id).where(Lead.deleted_at.is_(None)).order_by(Lead.id).limit(1))
    ids = [row.id for batch in batches for row in batch]
    assert all(len(batch) <= 7 for batch in batches)
    assert ids == sorted(set(ids), reverse=True)
    assert total == ids[-1]


def test_export_name() -> None:
    from bot.xlsx_export import export_name

    assert export_name(datetime(2026, 11, 29, tzinfo=UTC) + timedelta(hours=1)) == "leads-2026-11-29.xlsx"


async def test_the_lists_excel_button_keeps_its_filters(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory, generated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = await capture_documents(harness, monkeypatch)
    await harness.send(team.rop, "/leads")
    await harness.press(team.rop, "Статус ▾")
    await harness.press(team.rop, "отказ")
    await harness.press(team.rop, "Excel")
    _book, rows = read_sheet(sent[0])
    expected = await expected_rows(uow_factory, status=LeadStatus.REFUSED)
    assert rows[1:] == expected and expected
    # A forged filter is refused, not exported.
    await harness.click(team.rop, LeadListCB(action=LeadListAction.EXPORT, source=999))
    assert len(sent) == 1 and "фильтр больше недоступен" in harness.alerts()[-1]
