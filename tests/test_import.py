"""Spreadsheet import in the core: reading both formats and encodings, the preview's counts, batches, the report."""

from __future__ import annotations

import zipfile
from io import BytesIO
from typing import Any

import pytest
from sqlalchemy import func, select

from db import imports
from db.enums import HistoryAction, Role
from db.errors import Forbidden, InvalidInput
from db.imports import LeadImporter, Outcome
from db.models import Lead, LeadHistory, OutboxMessage, User
from db.repositories import LeadDraft
from db.spreadsheets import MAX_ROWS, Column, read_sheet
from db.uow import UnitOfWorkFactory
from tests.conftest import Team
from tests.import_support import EN_HEADER, RU_HEADER, csv_bytes, mixed_rows, phone, xlsx

TAKEN = ["+998911111111", "+998922222222", "+998933333333"]


async def lead_count(factory: UnitOfWorkFactory) -> int:
    async with factory(read_only=True) as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Lead)) or 0)


async def existing(factory: UnitOfWorkFactory, team: Team) -> None:
    async with factory() as uow:
        for n, taken in enumerate(TAKEN):
            await uow.leads.create(
                team.admin.user, LeadDraft(client_name=f"Был {n}", phone_number=taken, source="Сайт")
            )
        await uow.commit()


def summary(user: User, count: int, actor: Any) -> dict[str, Any]:
    return {"text": f"{user.first_name}: {count}", "reply_markup": None}


FILES = {
    "xlsx-en": lambda rows: ("leads.xlsx", xlsx(rows)),
    "csv-google-utf8": lambda rows: ("leads.csv", csv_bytes(rows)),
    "csv-excel-utf8-bom": lambda rows: ("leads.csv", b"\xef\xbb\xbf" + csv_bytes(rows, delimiter=";")),
    "csv-excel-1251": lambda rows: ("leads.csv", csv_bytes(rows, encoding="cp1251", delimiter=";")),
}


@pytest.mark.parametrize("kind", list(FILES))
@pytest.mark.parametrize("header", [EN_HEADER, RU_HEADER], ids=["en", "ru"])
async def test_preview_counts_are_exact_and_nothing_is_saved(
    uow_factory: UnitOfWorkFactory, team: Team, kind: str, header: list[str]
) -> None:
    await existing(uow_factory, team)
    rows = mixed_rows(header, seller="@ivanov", seller2="Второй Продажник", taken=TAKEN)
    name, data = FILES[kind](rows)
    async with uow_factory() as uow:
        await uow.session.execute(User.__table__.update().where(User.id == team.seller.id).values(username="ivanov"))
        await uow.commit()

    report = await LeadImporter(uow_factory).preview(team.mop.user, data, name)

    assert len(report.rows) == 100
    assert (report.to_create, report.duplicates, report.invalid) == (82, 8, 10)
    assert report.count(Outcome.DUPLICATE) == 3
    assert report.count(Outcome.DUPLICATE_IN_FILE) == 5
    assert report.format == ("xlsx" if kind.startswith("xlsx") else "csv")
    if kind == "csv-excel-1251":
        assert report.encoding == "windows-1251"
    invalid = {(row.number, row.column, row.reason) for row in report.invalid_rows()}
    assert invalid == {
        (84, Column.NAME, "name_empty"),
        (85, Column.PHONE, "phone_invalid"),
        (86, Column.PHONE, "phone_invalid"),
        (87, Column.PHONE, "phone_invalid"),
        (88, Column.SOURCE, "source_unknown"),
        (89, Column.SOURCE, "source_required"),
        (90, Column.BUDGET, "budget_invalid"),
        (91, Column.BUDGET, "budget_invalid"),
        (92, Column.SALESPERSON, "salesperson_unknown"),
        (93, Column.SALESPERSON, "salesperson_unknown"),
    }
    in_file = [row for row in report.rows if row.outcome == Outcome.DUPLICATE_IN_FILE]
    assert [row.duplicate_of_row for row in in_file] == [2, 3, 4, 5, 6]
    assert await lead_count(uow_factory) == 3  # the preview wrote nothing


async def test_import_creates_reports_and_sends_one_summary_per_salesperson(
    uow_factory: UnitOfWorkFactory, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "BATCH", 7)  # several batches
    await existing(uow_factory, team)
    rows = mixed_rows(EN_HEADER, seller=str(team.seller.chat_id), seller2="второй продажник", taken=TAKEN)

    report = await LeadImporter(uow_factory).run(team.rop.user, xlsx(rows), "leads.xlsx", summary=summary)

    assert (report.created, report.duplicates, report.invalid, report.to_create) == (82, 8, 10, 0)
    created = [row for row in report.rows if row.outcome == Outcome.CREATED]
    async with uow_factory(read_only=True) as uow:
        leads = {lead.id: lead for lead in (await uow.session.scalars(select(Lead))).all()}
        history = (
            await uow.session.scalars(select(LeadHistory).where(LeadHistory.action == HistoryAction.CREATED))
        ).all()
        outbox = (await uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    assert len(leads) == 85
    for row in created:
        lead = leads[row.lead_id]  # type: ignore[index]
        assert (lead.client_name, lead.phone_number) == (row.client_name, row.phone_number)
        assert lead.created_by_id == team.rop.id
    first = leads[created[0].lead_id]  # type: ignore[index]
    assert (first.source, first.budget, first.notes, first.assigned_to_id) == (
        "Сайт",
        50000.0,
        "заметка 0",
        team.seller.id,
    )
    assert sum(1 for h in history if h.changed_by_id == team.rop.id) == 82
    # No message per lead: one summary to each salesperson who got leads (28 and 27 of them).
    assert [(m.user_id, m.kind, m.payload["text"]) for m in outbox] == [
        (team.seller.id, "import_summary", "Продажник: 28"),
        (team.seller2.id, "import_summary", "Второй: 27"),
    ]
    duplicates = [row for row in report.rows if row.outcome == Outcome.DUPLICATE]
    assert {leads[row.lead_id].phone_number for row in duplicates} == set(TAKEN)  # type: ignore[index]


async def test_a_row_taken_since_the_preview_is_reported_as_a_duplicate(
    uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    rows = [EN_HEADER, ["A", phone(1), "Сайт", "", "", ""], ["B", phone(2), "Сайт", "", "", ""]]
    importer = LeadImporter(uow_factory)
    preview = await importer.preview(team.admin.user, csv_bytes(rows))
    assert preview.to_create == 2
    await existing(uow_factory, team)
    async with uow_factory() as uow:
        await uow.leads.create(team.admin.user, LeadDraft(client_name="C", phone_number=phone(2), source="Сайт"))
        await uow.commit()
    report = await importer.run(team.admin.user, csv_bytes(rows))
    assert [row.outcome for row in report.rows] == [Outcome.CREATED, Outcome.DUPLICATE]


async def test_only_managers_may_import(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    data = csv_bytes([EN_HEADER, ["A", phone(1), "Сайт", "", "", ""]])
    for member in (team.seller, team.finance):
        with pytest.raises(Forbidden):
            await LeadImporter(uow_factory).preview(member.user, data)
    assert Role(team.mop.user.role) == Role.MOP
    assert (await LeadImporter(uow_factory).preview(team.mop.user, data)).to_create == 1


def broken_zip() -> bytes:
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<not really")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "name", "reason"),
    [
        (b"", "a.csv", "import_empty"),
        (b"PK\x03\x04garbage", "a.xlsx", "import_malformed"),
        (broken_zip(), "a.xlsx", "import_malformed"),
        (b"\xd0\xcf\x11\xe0old excel", "a.xls", "import_format"),
        (b"a,b\x00,c\n", "a.csv", "import_format"),
        ("Город,Улица\nТашкент,Навои\n".encode(), "a.csv", "import_no_columns"),
        (b"x" * (10 * 1024 * 1024 + 1), "a.csv", "import_too_large"),
    ],
    ids=["empty", "not-a-zip", "broken-zip", "old-xls", "binary", "no-columns", "too-large"],
)
async def test_an_unreadable_file_is_refused_and_changes_nothing(
    uow_factory: UnitOfWorkFactory, team: Team, data: bytes, name: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await LeadImporter(uow_factory).run(team.admin.user, data, name)
    assert (caught.value.field, caught.value.reason) == ("file", reason)
    assert await lead_count(uow_factory) == 0


def test_the_row_limit_is_enforced() -> None:
    lines = ["name,phone"] + [f"n,{n}" for n in range(MAX_ROWS + 1)]
    with pytest.raises(InvalidInput) as caught:
        read_sheet("\n".join(lines).encode())
    assert caught.value.reason == "import_too_many_rows"
    assert len(read_sheet("\n".join(lines[:-1]).encode()).rows) == MAX_ROWS


def test_headers_are_recognised_loosely_and_unknown_ones_reported() -> None:
    data = csv_bytes(
        [["ФИО", "Номер телефона", "ИСТОЧНИК", "Город", "Заметки"], ["Иван", "901234567", "Сайт", "X", ""]]
    )
    sheet = read_sheet(data)
    assert sheet.columns == [Column.NAME, Column.PHONE, Column.SOURCE, Column.NOTES]
    assert sheet.ignored_headers == ["Город"]
    assert sheet.rows[0].values[Column.PHONE] == "901234567"


def test_numbers_typed_as_numbers_in_excel() -> None:
    sheet = read_sheet(xlsx([["Имя", "Телефон", "Бюджет"], ["Иван", 998901234567, 50000.0], [None, None, None]]))
    assert sheet.rows[0].values == {Column.NAME: "Иван", Column.PHONE: "998901234567", Column.BUDGET: "50000"}
    assert len(sheet.rows) == 1
