"""The PDF report (/report, ``GET /api/analytics/report.pdf``): the period's analytics on A4 with fpdf2.

Page 1: the totals, the funnel by source and the salespeople; page 2: refusal reasons and weekly cohorts;
then the four charts of /stats, two to a page (long tables flow onto more pages). Text is in the reader's
language; Cyrillic is set in DejaVu Sans, the TTF font matplotlib ships (nothing is downloaded). CPU
work: call ``render`` in a worker thread.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from bot.reports import charts, format_day, format_duration, percent, period_label
from bot.texts import Texts
from db.analytics import Summary

PDF_MIME = "application/pdf"
FONT = "DejaVu"
_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONT_FILES = {"": _FONT_DIR / "DejaVuSans.ttf", "B": _FONT_DIR / "DejaVuSans-Bold.ttf"}
_HEADINGS = FontFace(emphasis="BOLD", fill_color=(221, 235, 247))
TABLE_ROWS = 25  # rows of a table in the PDF: the full lists are in the Excel export and the API


def _plain(text: str) -> str:
    """A text template's HTML (``&lt;``, ``<b>``) as plain text for the PDF."""
    return html.unescape(text.replace("<b>", "").replace("</b>", ""))


class _Report(FPDF):
    def __init__(self, texts: Texts, title: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.texts = texts
        self.report_title = title
        for style, path in FONT_FILES.items():
            self.add_font(FONT, style, str(path))
        self.set_auto_page_break(auto=True, margin=15)
        self.set_margins(15, 15, 15)
        self.set_title(title)
        self.set_creator("LeadBot")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, "", 8)
        self.cell(0, 6, f"{self.report_title} · {self.page_no()}", align="C")

    def heading(self, text: str, size: int = 13) -> None:
        self.set_font(FONT, "B", size)
        self.multi_cell(0, 8, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 9)

    def line_of_text(self, text: str) -> None:
        self.set_font(FONT, "", 10)
        self.multi_cell(0, 6, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def grid(self, header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[float]) -> None:
        self.set_font(FONT, "", 8)
        with self.table(
            col_widths=tuple(widths),
            text_align=("LEFT", *("RIGHT",) * (len(header) - 1)),
            line_height=5.5,
            first_row_as_headings=True,
            headings_style=_HEADINGS,
        ) as table:
            head = table.row()
            for title in header:
                head.cell(title)
            for values in rows:
                row = table.row()
                for value in values:
                    row.cell(value)
        self.ln(4)


def render(summary: Summary, texts: Texts) -> bytes:
    """The report as PDF bytes."""
    t = texts.t
    pdf = _Report(texts, t("report.title"))
    pdf.add_page()
    pdf.heading(t("report.title"), 16)
    pdf.line_of_text(t("report.period", period=period_label(summary), timezone=summary.timezone))
    pdf.line_of_text(t("report.scope_own" if summary.own_only else "report.scope_team"))
    pdf.ln(2)
    total = summary.total
    if total.created == 0:
        pdf.line_of_text(_plain(t("stats.empty")))
        return bytes(pdf.output())
    pdf.line_of_text(
        _plain(
            t(
                "stats.total",
                created=total.created,
                in_work=total.in_work,
                closed=total.closed,
                conversion=percent(total.conversion),
                refused=total.refused,
                refusal_rate=percent(total.refusal_rate),
            )
        )
    )
    pdf.ln(2)

    pdf.heading(t("report.h.sources"))
    funnel_header = [
        t(f"report.col.{k}")
        for k in ("source", "created", "in_work", "closed", "refused", "conversion", "refusal_rate")
    ]
    funnel_rows = [
        [
            funnel.source or t("report.col.total"),
            str(funnel.created),
            str(funnel.in_work),
            str(funnel.closed),
            str(funnel.refused),
            percent(funnel.conversion),
            percent(funnel.refusal_rate),
        ]
        for funnel in [*summary.sources[:TABLE_ROWS], summary.total]
    ]
    pdf.grid(funnel_header, funnel_rows, (50, 20, 20, 20, 20, 25, 25))

    if summary.sellers:
        pdf.heading(t("report.h.sellers"))
        seller_header = [
            t(f"report.col.{k}")
            for k in ("seller", "assigned", "closed", "refused", "waiting", "conversion", "median", "p90")
        ]
        seller_rows = [
            [
                seller.name,
                str(seller.assigned),
                str(seller.closed),
                str(seller.refused),
                str(seller.waiting),
                percent(seller.conversion),
                _plain(format_duration(seller.median_response, texts)),
                _plain(format_duration(seller.p90_response, texts)),
            ]
            for seller in summary.sellers[:TABLE_ROWS]
        ]
        pdf.grid(seller_header, seller_rows, (40, 20, 18, 16, 18, 20, 24, 24))
        if summary.unassigned:
            pdf.line_of_text(f"{t('report.unassigned')}: {summary.unassigned}")

    pdf.add_page()
    pdf.heading(t("report.h.reasons"))
    if summary.reasons:
        reason_rows = [[reason.reason, str(reason.count)] for reason in summary.reasons[:TABLE_ROWS]]
        pdf.grid([t("report.col.reason"), t("report.col.count")], reason_rows, (150, 30))
    else:
        pdf.line_of_text(t("common.none"))
    pdf.heading(t("report.h.cohorts"))
    cohort_rows = [
        [format_day(c.week_start), str(c.created), str(c.closed), percent(c.conversion)] for c in summary.cohorts
    ]
    cohort_header = [t(f"report.col.{k}") for k in ("week", "created", "closed", "conversion")]
    pdf.grid(cohort_header, cohort_rows, (60, 40, 40, 40))

    pictures = charts(summary, texts)
    for index, chart in enumerate(pictures):
        if index % 2 == 0:
            pdf.add_page()
        # 4:3 at 160 × 120 mm, centred: two to a page within the margins.
        pdf.image(io.BytesIO(chart.png), x=25, w=160, h=120)
        pdf.ln(4)
    return bytes(pdf.output())


def report_name(summary: Summary) -> str:
    return f"report-{summary.period.first.isoformat()}-{summary.period.last.isoformat()}.pdf"
