"""The Excel export: every lead the caller may see (one sheet) and the period's analytics (a second one).

XlsxWriter in ``constant_memory`` mode writes each row to a temporary file as it comes, so memory holds
one batch of leads (``db.exports.export_batches``) and never the whole export. Each batch is written in a
worker thread. Dates are in the CRM's time zone, the budget a number with the currency's format, the
header frozen, filters on, column widths fitted to what was written.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import xlsxwriter
from xlsxwriter.worksheet import Worksheet

from bot.presentation.views import status_label
from bot.reports import format_day, period_label
from bot.texts import Texts
from db.analytics import Period, Summary
from db.enums import LeadStatus
from db.exports import ExportRow, export_batches
from db.permissions import Actor
from db.repositories import LeadFilter
from db.settings import CrmSection
from db.uow import UnitOfWork

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_WIDTH = 60  # characters: long notes wrap in Excel rather than make a column a screen wide
DATETIME_FORMAT = "dd.mm.yyyy hh:mm"
DATE_FORMAT = "dd.mm.yyyy"

# (header key, the value of a row); the value's kind picks how it is written.
_COLUMNS: list[tuple[str, Callable[[ExportRow], Any]]] = [
    ("export.col.id", lambda r: r.id),
    ("export.col.client_name", lambda r: r.client_name),
    ("export.col.phone", lambda r: r.phone_number),
    ("export.col.status", lambda r: r.status),
    ("export.col.source", lambda r: r.source),
    ("export.col.budget", lambda r: r.budget),
    ("export.col.seller", lambda r: r.assignee_name),
    ("export.col.seller_id", lambda r: r.assigned_to_id),
    ("export.col.created_by", lambda r: r.created_by_name),
    ("export.col.created_at", lambda r: r.created_at),
    ("export.col.updated_at", lambda r: r.updated_at),
    ("export.col.closing_date", lambda r: r.closing_date),
    ("export.col.refusal_reason", lambda r: r.refusal_reason),
    ("export.col.notes", lambda r: r.notes),
]
STATUS_COLUMN = 3
BUDGET_COLUMN = 5


def currency_format(currency: str) -> str:
    return f'#,##0.00 "{currency.upper()}"'


class XlsxExport:
    def __init__(self, path: str, texts: Texts, crm: CrmSection) -> None:
        self.texts = texts
        self.crm = crm
        self.tz = crm.tz
        self.workbook = xlsxwriter.Workbook(path, {"constant_memory": True, "strings_to_numbers": False})
        self.leads = self.workbook.add_worksheet(texts.t("export.sheet.leads"))
        self.analytics = self.workbook.add_worksheet(texts.t("export.sheet.analytics"))
        self.bold = self.workbook.add_format({"bold": True})
        self.header = self.workbook.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
        self.datetime = self.workbook.add_format({"num_format": DATETIME_FORMAT})
        self.date = self.workbook.add_format({"num_format": DATE_FORMAT})
        self.money = self.workbook.add_format({"num_format": currency_format(crm.currency)})
        self.percent = self.workbook.add_format({"num_format": "0.0%"})
        self.hours = self.workbook.add_format({"num_format": "0.0"})
        self.statuses = {status.value: status_label(texts, status) for status in LeadStatus}
        self.headers = [texts.t(key) for key, _ in _COLUMNS]
        self.widths = [len(h) + 2 for h in self.headers]
        self.rows = 0
        self.leads.freeze_panes(1, 0)
        for col, title in enumerate(self.headers):
            self.leads.write_string(0, col, title, self.header)

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz).replace(tzinfo=None)

    def write_rows(self, rows: list[ExportRow]) -> None:
        sheet = self.leads
        for lead in rows:
            self.rows += 1
            line = self.rows
            for col, (_key, get) in enumerate(_COLUMNS):
                value = get(lead)
                width = self._write(sheet, line, col, value)
                if width > self.widths[col]:
                    self.widths[col] = min(width, MAX_WIDTH)

    def _write(self, sheet: Worksheet, row: int, col: int, value: Any) -> int:
        """Writes one cell; answers the width it needs."""
        if value is None:
            return 0
        if col == BUDGET_COLUMN:
            sheet.write_number(row, col, value, self.money)
            return len(f"{value:,.2f}") + len(self.crm.currency) + 2
        if isinstance(value, datetime):
            sheet.write_datetime(row, col, self._local(value), self.datetime)
            return 17
        if hasattr(value, "isoformat") and not isinstance(value, str):  # a date
            sheet.write_datetime(row, col, datetime(value.year, value.month, value.day), self.date)
            return 11
        if isinstance(value, int):
            sheet.write_number(row, col, value)
            return len(str(value)) + 1
        text = self.statuses[value] if col == STATUS_COLUMN else value
        sheet.write_string(row, col, text)
        return max((len(part) for part in str(text).splitlines()), default=0) + 1

    def write_analytics(self, summary: Summary) -> None:
        t = self.texts.t
        sheet = self.analytics
        row = 0

        def line(*values: Any, fmt: Any = None) -> None:
            nonlocal row
            for col, value in enumerate(values):
                if value is None:
                    continue
                if isinstance(value, float):
                    sheet.write_number(row, col, value, fmt or self.percent)
                elif isinstance(value, int):
                    sheet.write_number(row, col, value)
                elif isinstance(value, tuple):  # (number, format)
                    sheet.write_number(row, col, value[0], value[1])
                else:
                    sheet.write_string(row, col, str(value), fmt if fmt is not None and col == 0 else None)
            row += 1

        line(t("report.title"), fmt=self.bold)
        line(t("report.period", period=period_label(summary), timezone=summary.timezone))
        line(t("report.scope_own" if summary.own_only else "report.scope_team"))
        row += 1
        line(t("report.h.sources"), fmt=self.bold)
        line(*(t(f"report.col.{k}") for k in _FUNNEL_COLUMNS), fmt=self.bold)
        for funnel in [*summary.sources, summary.total]:
            name = funnel.source or t("report.col.total")
            line(
                name,
                funnel.created,
                funnel.in_work,
                funnel.closed,
                funnel.refused,
                funnel.conversion,
                funnel.refusal_rate,
            )
        row += 1
        line(t("report.h.sellers"), fmt=self.bold)
        line(*(t(f"report.col.{k}") for k in _SELLER_COLUMNS), fmt=self.bold)
        for seller in summary.sellers:
            line(
                seller.name,
                seller.assigned,
                seller.closed,
                seller.refused,
                seller.waiting,
                seller.conversion,
                _hours(seller.median_response, self.hours),
                _hours(seller.p90_response, self.hours),
            )
        if summary.unassigned:
            line(t("report.unassigned"), summary.unassigned)
        row += 1
        line(t("report.h.reasons"), fmt=self.bold)
        line(t("report.col.reason"), t("report.col.count"), fmt=self.bold)
        for reason in summary.reasons:
            line(reason.reason, reason.count)
        row += 1
        line(t("report.h.cohorts"), fmt=self.bold)
        line(t("report.col.week"), t("report.col.created"), t("report.col.closed"), t("report.col.conversion"))
        for cohort in summary.cohorts:
            line(format_day(cohort.week_start), cohort.created, cohort.closed, cohort.conversion)
        sheet.set_column(0, 0, 32)
        sheet.set_column(1, 7, 14)

    def close(self) -> None:
        last_col = len(_COLUMNS) - 1
        self.leads.autofilter(0, 0, max(self.rows, 1), last_col)
        for col, width in enumerate(self.widths):
            self.leads.set_column(col, col, width)
        self.workbook.close()


_FUNNEL_COLUMNS = ("source", "created", "in_work", "closed", "refused", "conversion", "refusal_rate")
_SELLER_COLUMNS = ("seller", "assigned", "closed", "refused", "waiting", "conversion", "median_hours", "p90_hours")


def _hours(value: timedelta | None, fmt: Any) -> tuple[float, Any] | None:
    return None if value is None else (value.total_seconds() / 3600, fmt)


async def write_xlsx(
    path: str,
    batches: AsyncIterator[list[ExportRow]],
    summary: Summary,
    texts: Texts,
    crm: CrmSection,
) -> int:
    """Writes the export to ``path``; answers how many leads it holds."""
    export = XlsxExport(path, texts, crm)
    try:
        async for rows in batches:
            await asyncio.to_thread(export.write_rows, rows)
        await asyncio.to_thread(export.write_analytics, summary)
    finally:
        await asyncio.to_thread(export.close)
    return export.rows


def export_name(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return f"leads-{moment.strftime('%Y-%m-%d')}.xlsx"


async def export_to_file(
    uow: UnitOfWork, actor: Actor, flt: LeadFilter, period: Period, texts: Texts, crm: CrmSection
) -> tuple[str, int]:
    """The export of what ``actor`` may list under ``flt``, with ``period``'s analytics, written in ``uow``
    to a temporary file: ``(path, leads)``. The caller sends the file once the unit is committed, then
    removes it."""
    summary = await uow.analytics.summary(actor, period)
    handle, path = tempfile.mkstemp(prefix="leadbot-export-", suffix=".xlsx")
    os.close(handle)
    try:
        count = await write_xlsx(path, export_batches(uow.session, uow.leads, actor, flt), summary, texts, crm)
    except BaseException:
        os.unlink(path)
        raise
    return path, count
