"""The import as people see it: the template and report workbooks, the preview message, the summary sent to
each salesperson. The work itself is ``db.imports``."""

from __future__ import annotations

import html
import io
import re
from typing import Any

from bot.config import Settings
from bot.presentation.views import cut, describe_error, esc, user_label
from bot.texts import Texts, pick_language, texts_for
from db.errors import InvalidInput
from db.imports import ImportReport, Outcome, RowResult, Summary
from db.models import User
from db.permissions import Actor
from db.spreadsheets import MAX_FILE_BYTES, MAX_ROWS, Column

TEMPLATE_NAME = "leads-template.xlsx"
REPORT_NAME = "import-report.xlsx"
# How many invalid rows the preview message lists; all of them are in the report file.
PREVIEW_PROBLEMS = 10
_COLUMNS = list(Column)


def limits(texts: Texts) -> dict[str, Any]:
    return {"limit_mb": MAX_FILE_BYTES // (1024 * 1024), "limit_rows": f"{MAX_ROWS:,}".replace(",", " ")}


def template(texts: Texts) -> bytes:
    """An empty workbook with the header row in the user's language."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(texts.t("import.sheet"))
    sheet.append([texts.t(f"import.col.{column.value}") for column in _COLUMNS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _reason(texts: Texts, row: RowResult) -> str:
    if row.outcome == Outcome.DUPLICATE:
        return texts.t("import.why.duplicate", lead_id=row.lead_id or "?")
    if row.outcome == Outcome.DUPLICATE_IN_FILE:
        return texts.t("import.why.duplicate_in_file", row=row.duplicate_of_row or "?")
    if row.outcome == Outcome.INVALID:
        field = row.column.value if row.column else ""
        return describe_error(texts, InvalidInput(field, row.reason or "default", row.message or "", **row.params))
    return ""


def _plain(html_text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", html_text))


def report(texts: Texts, result: ImportReport) -> bytes:
    """Every row's outcome, one line each, in the order of the file."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet(texts.t("import.sheet"))

    def text(value: str) -> WriteOnlyCell:
        # Always a string: a name like "=HYPERLINK(...)" from the file must not become a formula.
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"
        return cell

    sheet.append([texts.t(f"import.report.{name}") for name in ("row", "name", "phone", "outcome", "column", "why")])
    for row in result.rows:
        sheet.append(
            [
                row.number,
                text(row.client_name),
                text(row.phone_number),
                texts.t(f"import.outcome.{row.outcome.value}"),
                texts.t(f"import.col.{row.column.value}") if row.column else "",
                _plain(_reason(texts, row)),
            ]
        )
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def preview_text(texts: Texts, result: ImportReport, filename: str) -> str:
    lines = [
        texts.t(
            "import.preview",
            file=esc(filename),
            rows=len(result.rows),
            create=result.to_create,
            duplicates=result.duplicates,
            existing=result.count(Outcome.DUPLICATE),
            in_file=result.count(Outcome.DUPLICATE_IN_FILE),
            invalid=result.invalid,
        )
    ]
    problems = result.invalid_rows()
    if problems:
        lines.append(texts.t("import.problems"))
        for row in problems[:PREVIEW_PROBLEMS]:
            column = texts.t(f"import.col.{row.column.value}") if row.column else ""
            lines.append(texts.t("import.problem", row=row.number, column=column, why=_reason(texts, row)))
        if len(problems) > PREVIEW_PROBLEMS:
            lines.append(texts.t("import.more_problems", count=len(problems) - PREVIEW_PROBLEMS))
    if result.ignored_headers:
        lines.append(texts.t("import.ignored", columns=esc(", ".join(result.ignored_headers))))
    lines.append(texts.t("import.confirm" if result.to_create else "import.nothing"))
    return cut("\n".join(lines))


def done_text(texts: Texts, result: ImportReport) -> str:
    return texts.t("import.done", created=result.created, duplicates=result.duplicates, invalid=result.invalid)


def summary_for(settings: Settings) -> Summary:
    """What a salesperson is told about the leads an import gave them (one message per import)."""

    def summary(user: User, count: int, actor: Actor) -> dict[str, Any]:
        texts = texts_for(pick_language(user.language, None, settings.bot.default_language))
        text = texts.t("import.summary", count=count, actor=esc(user_label(actor)))
        return {"text": cut(text), "reply_markup": None}

    return summary
