"""/import in the bot: the template, a spreadsheet previewed with Import / Cancel, the import and its report."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime

from aiogram.methods import SendDocument
from aiogram.types import BufferedInputFile, Chat, Document, Message, Update
from openpyxl import load_workbook
from sqlalchemy import func, select

from db.models import Lead, OutboxMessage
from db.repositories import LeadDraft
from db.spreadsheets import MAX_FILE_BYTES, MAX_ROWS
from tests.conftest import Harness, Member, Team
from tests.import_support import EN_HEADER, RU_HEADER, csv_bytes, mixed_rows, xlsx

TAKEN = ["+998911111111", "+998922222222", "+998933333333"]
_ids = itertools.count(10**6)


async def send_file(harness: Harness, member: Member, name: str, data: bytes) -> None:
    file_id = f"file{next(_ids)}"
    harness.session.files[file_id] = data
    message = Message(
        message_id=next(_ids),
        date=datetime.now(UTC),
        chat=Chat(id=member.chat_id, type="private"),
        from_user=member.tg,
        document=Document(file_id=file_id, file_unique_id=file_id, file_name=name, file_size=len(data)),
    )
    await harness.dp.feed_update(harness.bot, Update(update_id=next(_ids), message=message))


def workbook_rows(request: SendDocument) -> list[tuple[object, ...]]:
    assert isinstance(request.document, BufferedInputFile)
    book = load_workbook(io.BytesIO(request.document.data), read_only=True)
    rows = [tuple(row) for row in book.worksheets[0].iter_rows(values_only=True)]
    book.close()
    return rows


async def lead_count(harness: Harness) -> int:
    async with harness.uow_factory(read_only=True) as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Lead)) or 0)


async def existing(harness: Harness, team: Team) -> None:
    async with harness.uow_factory() as uow:
        for n, taken in enumerate(TAKEN):
            await uow.leads.create(
                team.admin.user, LeadDraft(client_name=f"Был {n}", phone_number=taken, source="Сайт")
            )
        await uow.commit()


async def test_import_sends_the_template(harness: Harness, team: Team) -> None:
    await harness.send(team.mop, "/import")
    [template] = harness.session.of(SendDocument)
    assert template.document.filename == "leads-template.xlsx"  # type: ignore[union-attr]
    assert workbook_rows(template) == [("Имя", "Телефон", "Источник", "Бюджет", "Заметки", "Продажник")]
    assert "10 МБ" in (template.caption or "") and "50 000" in (template.caption or "")


async def test_preview_then_cancel_saves_nothing(harness: Harness, team: Team) -> None:
    await existing(harness, team)
    await harness.send(team.mop, "/import")
    rows = mixed_rows(RU_HEADER, seller="Продажник Иванов", seller2="", taken=TAKEN)
    await send_file(harness, team.mop, "лиды.csv", csv_bytes(rows, encoding="cp1251", delimiter=";"))

    text = harness.last_text(team.mop.chat_id)
    assert "Строк: 100" in text
    assert "Будет создано: <b>82</b>" in text
    assert "Дубликатов: 8 (уже есть в базе: 3, повторы в файле: 5)" in text
    assert "С ошибками: 10" in text
    assert "строка 85, Телефон: Неверный номер" in text
    assert [caption for caption, _ in harness.last_buttons(team.mop.chat_id)] == ["📥 Импортировать 82", "✖️ Отмена"]

    await harness.press(team.mop, "Отмена")
    assert "ничего не сохранено" in harness.last_text(team.mop.chat_id)
    assert await lead_count(harness) == 3
    assert len(harness.session.of(SendDocument)) == 1  # the template only: no report


async def test_a_spreadsheet_sent_without_import_is_previewed_imported_and_reported(
    harness: Harness, team: Team
) -> None:
    await existing(harness, team)
    rows = mixed_rows(EN_HEADER, seller="Продажник Иванов", seller2=str(team.seller2.chat_id), taken=TAKEN)
    await send_file(harness, team.rop, "leads.xlsx", xlsx(rows))
    assert "Будет создано: <b>82</b>" in harness.last_text(team.rop.chat_id)

    await harness.press(team.rop, "Импортировать")

    assert await lead_count(harness) == 85
    [report] = harness.session.of(SendDocument)
    assert report.document.filename == "import-report.xlsx"  # type: ignore[union-attr]
    assert "Создано: 82" in (report.caption or "")
    table = workbook_rows(report)
    assert table[0] == ("Строка", "Имя", "Телефон", "Итог", "Столбец", "Причина")
    assert len(table) == 101
    outcomes = [row[3] for row in table[1:]]
    assert outcomes.count("создан") == 82
    assert outcomes.count("дубликат") == 3
    assert outcomes.count("дубликат в файле") == 5
    assert outcomes.count("ошибка") == 10
    by_row = {row[0]: row for row in table[1:]}
    assert by_row[92][4:] == (
        "Продажник",
        "Нет активного продажника «Никто Никтович» (имя и фамилия, @username или Telegram ID).",
    )
    assert by_row[94][3:] == ("дубликат в файле", None, "повторяет строку 2")
    # One summary per salesperson, not a message per lead.
    async with harness.uow_factory(read_only=True) as uow:
        outbox = (await uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    assert [(m.user_id, m.kind) for m in outbox] == [
        (team.seller.id, "import_summary"),
        (team.seller2.id, "import_summary"),
    ]
    assert "вам назначено <b>28</b>" in outbox[0].payload["text"]

    # The preview is spent: pressing Import again imports nothing more.
    await harness.press(team.rop, "Импортировать")
    assert await lead_count(harness) == 85


async def test_a_bad_file_is_explained_and_the_next_one_is_taken(harness: Harness, team: Team) -> None:
    await harness.send(team.admin, "/import")
    await send_file(harness, team.admin, "leads.xlsx", b"PK\x03\x04 not a workbook")
    assert "не читается" in harness.last_text(team.admin.chat_id)
    await harness.send(team.admin, "просто текст")
    assert "Пришлите таблицу файлом" in harness.last_text(team.admin.chat_id)
    await send_file(harness, team.admin, "leads.csv", csv_bytes([EN_HEADER, ["Анна", "901234567", "Сайт"]]))
    assert "Будет создано: <b>1</b>" in harness.last_text(team.admin.chat_id)
    assert await lead_count(harness) == 0


async def test_salespeople_cannot_import(harness: Harness, team: Team) -> None:
    await harness.send(team.seller, "/import")
    assert "Импортируют лиды" in harness.last_text(team.seller.chat_id)
    await send_file(harness, team.seller, "leads.csv", csv_bytes([EN_HEADER, ["Анна", "901234567", "Сайт"]]))
    assert "Предпросмотр" not in harness.last_text(team.seller.chat_id)
    assert not harness.session.of(SendDocument)


async def test_the_report_never_turns_file_text_into_formulas(harness: Harness, team: Team) -> None:
    rows = [EN_HEADER, ['=HYPERLINK("http://evil.example","x")', "=1+1", "Сайт"], ["Анна", "901234567", "Сайт"]]
    await send_file(harness, team.admin, "leads.csv", csv_bytes(rows))
    await harness.press(team.admin, "Импортировать")
    [report] = harness.session.of(SendDocument)
    assert isinstance(report.document, BufferedInputFile)
    book = load_workbook(io.BytesIO(report.document.data))
    cells = [cell for row in book.worksheets[0].iter_rows() for cell in row]
    assert not [cell.value for cell in cells if cell.data_type == "f"]
    assert any(cell.value == "=1+1" for cell in cells)


async def test_a_file_past_the_size_limit_is_refused_before_it_is_downloaded(harness: Harness, team: Team) -> None:
    await harness.send(team.mop, "/import")
    message = Message(
        message_id=next(_ids),
        date=datetime.now(UTC),
        chat=Chat(id=team.mop.chat_id, type="private"),
        from_user=team.mop.tg,
        # Never registered with the fake Bot API: a download would fail the test.
        document=Document(
            file_id="too-big", file_unique_id="too-big", file_name="leads.xlsx", file_size=MAX_FILE_BYTES + 1
        ),
    )
    await harness.dp.feed_update(harness.bot, Update(update_id=next(_ids), message=message))
    assert harness.last_text(team.mop.chat_id) == "Файл больше 10 МБ: разделите его на несколько."
    assert await lead_count(harness) == 0


async def test_a_file_past_the_row_limit_is_refused_with_the_limit(harness: Harness, team: Team) -> None:
    lines = ["Имя,Телефон,Источник"] + [f"Клиент,+99890{n:07d},Сайт" for n in range(MAX_ROWS + 1)]
    await send_file(harness, team.admin, "leads.csv", "\n".join(lines).encode())
    assert "В файле больше 50000 строк" in harness.last_text(team.admin.chat_id)
    assert not harness.last_buttons(team.admin.chat_id)
    assert await lead_count(harness) == 0
