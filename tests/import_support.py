"""Spreadsheets for the import tests: .xlsx built with openpyxl, .csv as Excel and Google Sheets write them."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from openpyxl import Workbook

EN_HEADER = ["Name", "Phone", "Source", "Budget", "Notes", "Salesperson"]
RU_HEADER = ["Имя", "Телефон", "Источник", "Бюджет", "Комментарий", "Продажник"]


def xlsx(rows: Sequence[Sequence[object]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(rows: Sequence[Sequence[object]], *, encoding: str = "utf-8", delimiter: str = ",") -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return out.getvalue().encode(encoding)


def phone(n: int) -> str:
    return f"+99890{n:07d}"


def mixed_rows(header: Sequence[str], *, seller: str, seller2: str, taken: Sequence[str]) -> list[list[object]]:
    """100 rows: 82 good ones, 10 invalid (one problem each), 5 repeating an earlier row's phone, and 3
    with the phones in ``taken`` (live leads already)."""
    rows: list[list[object]] = [list(header)]
    for n in range(82):
        who = seller if n % 3 == 0 else (seller2 if n % 3 == 1 else "")
        rows.append([f"Клиент {n}", phone(n), "Instagram" if n % 2 else "сайт", 50000 + n, f"заметка {n}", who])
    bad: list[list[object]] = [
        ["", phone(200), "Instagram", "", "", ""],  # no name
        ["Без телефона", "", "Instagram", "", "", ""],
        ["Плохой телефон", "12", "Instagram", "", "", ""],
        ["Буквы", "abc", "Instagram", "", "", ""],
        ["Неизвестный источник", phone(201), "ТикТок", "", "", ""],
        ["Без источника", phone(202), "", "", "", ""],
        ["Плохой бюджет", phone(203), "Instagram", "много", "", ""],
        ["Минус бюджет", phone(204), "Instagram", "-5", "", ""],
        ["Кто это", phone(205), "Instagram", "", "", "Никто Никтович"],
        ["Кто это 2", phone(206), "Instagram", "", "", "@nobody_here"],
    ]
    rows.extend(bad)
    for n in range(5):  # the phone of good rows 0..4, written another way
        rows.append([f"Повтор {n}", f"90 {phone(n)[6:]}", "Instagram", "", "", ""])
    for n, taken_phone in enumerate(taken):
        rows.append([f"Уже есть {n}", taken_phone, "Instagram", "", "", ""])
    return rows
