"""Reading a spreadsheet of leads: ``.xlsx`` (openpyxl, read-only mode) or ``.csv`` (UTF-8 or Windows-1251,
comma, semicolon or tab: what Excel and Google Sheets export), columns recognised by their header in
Russian or English.

Only reading and recognising happen here; what a row means is ``db.imports``. A file that cannot be
read at all is an ``InvalidInput`` on the field ``file`` (nothing has been written by then).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from db.errors import InvalidInput

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000
# Columns past this are not read (a sheet may carry thousands of empty formatted ones).
MAX_COLUMNS = 64
XLSX_MAGIC = b"PK\x03\x04"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Column(StrEnum):
    NAME = "client_name"
    PHONE = "phone_number"
    SOURCE = "source"
    BUDGET = "budget"
    NOTES = "notes"
    SALESPERSON = "salesperson"


# Header words, compared after ``_header_key`` (case, "ё", punctuation and spacing do not matter).
HEADER_ALIASES: dict[Column, tuple[str, ...]] = {
    Column.NAME: ("name", "client", "client name", "full name", "имя", "клиент", "имя клиента", "фио"),
    Column.PHONE: ("phone", "phone number", "telephone", "tel", "телефон", "тел", "номер телефона"),
    Column.SOURCE: ("source", "lead source", "источник"),
    Column.BUDGET: ("budget", "бюджет"),
    Column.NOTES: (
        "notes",
        "note",
        "comment",
        "comments",
        "заметки",
        "заметка",
        "комментарий",
        "комментарии",
        "примечание",
    ),
    Column.SALESPERSON: ("salesperson", "seller", "assigned to", "продажник", "ответственный"),
}
REQUIRED = (Column.NAME, Column.PHONE)


def _header_key(text: str) -> str:
    text = text.casefold().replace("ё", "е").replace("_", " ")
    text = re.sub(r"[^\w ]+", " ", text)
    return " ".join(text.split())


_BY_HEADER = {_header_key(alias): column for column, aliases in HEADER_ALIASES.items() for alias in aliases}


@dataclass(slots=True)
class SheetRow:
    number: int  # the row's number in the spreadsheet (the header is row 1 when it is the first line)
    values: dict[Column, str]


@dataclass(slots=True)
class Sheet:
    format: str  # "xlsx" | "csv"
    columns: list[Column]
    rows: list[SheetRow] = field(default_factory=list)
    ignored_headers: list[str] = field(default_factory=list)
    encoding: str | None = None  # of a CSV file


def _file_error(reason: str, message: str, **params: Any) -> InvalidInput:
    return InvalidInput("file", reason, message, **params)


def read_sheet(data: bytes, filename: str | None = None) -> Sheet:
    """The rows of the file's first sheet, under a recognised header, or ``InvalidInput`` (field ``file``)."""
    if len(data) > MAX_FILE_BYTES:
        raise _file_error(
            "import_too_large",
            f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB",
            limit_mb=MAX_FILE_BYTES // (1024 * 1024),
        )
    if not data.strip():
        raise _file_error("import_empty", "the file is empty")
    name = (filename or "").lower()
    if data.startswith(XLSX_MAGIC):
        return _table("xlsx", _xlsx_lines(data))
    if name.endswith((".xlsx", ".xlsm", ".xls")) or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise _file_error(
            "import_format", "the file is not an .xlsx workbook or a .csv file (an old .xls? save it as .xlsx)"
        )
    text, encoding = _decode(data)
    sheet = _table("csv", _csv_lines(text))
    sheet.encoding = encoding
    return sheet


def _decode(data: bytes) -> tuple[str, str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data:
        raise _file_error("import_format", "the file is not an .xlsx workbook or a .csv file")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1251"), "windows-1251"
    except UnicodeDecodeError:
        raise _file_error("import_encoding", "the file is neither UTF-8 nor Windows-1251 text") from None


def _csv_lines(text: str) -> Iterator[list[str]]:
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = max((";", ",", "\t"), key=first.count)
    try:
        yield from csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    except csv.Error as exc:
        raise _file_error("import_malformed", f"the CSV file cannot be read: {exc}") from None


def _xlsx_lines(data: bytes) -> Iterator[list[str]]:
    # openpyxl is imported here: only imports need it, and it takes a moment to load.
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # a damaged or foreign zip: many kinds of error, all meaning "unreadable"
        raise _file_error("import_malformed", f"the .xlsx file cannot be read ({type(exc).__name__})") from None
    try:
        if not workbook.worksheets:
            raise _file_error("import_empty", "the workbook has no sheets")
        sheet = workbook.worksheets[0]
        try:
            for values in sheet.iter_rows(max_col=MAX_COLUMNS, values_only=True):
                yield [_cell(value) for value in values]
        except InvalidInput:
            raise
        except Exception as exc:
            raise _file_error("import_malformed", f"the .xlsx file cannot be read ({type(exc).__name__})") from None
    finally:
        workbook.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        # A phone or a budget typed as a number: 998901234567.0 is 998901234567.
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def _table(kind: str, lines: Iterable[list[str]]) -> Sheet:
    sheet: Sheet | None = None
    positions: dict[int, Column] = {}
    count = 0
    for number, cells in enumerate(lines, start=1):
        cells = [cell.strip() for cell in cells[:MAX_COLUMNS]]
        if not any(cells):
            continue
        if sheet is None:
            sheet, positions = _header(kind, cells)
            continue
        count += 1
        if count > MAX_ROWS:
            raise _file_error("import_too_many_rows", f"the file has more than {MAX_ROWS} rows", limit=MAX_ROWS)
        values = {column: cells[i] if i < len(cells) else "" for i, column in positions.items()}
        sheet.rows.append(SheetRow(number, values))
    if sheet is None:
        raise _file_error("import_empty", "the file has no header row")
    return sheet


def _header(kind: str, cells: list[str]) -> tuple[Sheet, dict[int, Column]]:
    positions: dict[int, Column] = {}
    ignored: list[str] = []
    for i, cell in enumerate(cells):
        column = _BY_HEADER.get(_header_key(cell))
        if column is None or column in positions.values():
            if cell:
                ignored.append(cell)
            continue
        positions[i] = column
    missing = [column for column in REQUIRED if column not in positions.values()]
    if missing:
        raise _file_error(
            "import_no_columns",
            "the first row must name the columns; required: name (имя) and phone (телефон)",
            missing=", ".join(column.value for column in missing),
        )
    return Sheet(kind, list(positions.values()), ignored_headers=ignored), positions
