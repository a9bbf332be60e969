"""The PDF report (/report, GET /api/analytics/report.pdf): A4 pages, the tables' text extracts with
Cyrillic intact, in the reader's language."""

from __future__ import annotations

import io
from datetime import date

import httpx
import pytest
from aiogram.methods import SendDocument
from aiogram.types import BufferedInputFile
from pypdf import PdfReader

from bot import pdf_report
from bot.texts import texts_for
from db.analytics import Period
from db.uow import UnitOfWorkFactory
from keyboards.stats import PeriodChoice, ReportKind, StatsCB
from tests.analytics_data import simulate, store
from tests.api_support import bearer
from tests.conftest import Harness, Team

A4_POINTS = (595, 842)
PERIOD = Period(date(2026, 10, 27), date(2026, 11, 25))


@pytest.fixture
async def generated(team: Team, uow_factory: UnitOfWorkFactory) -> None:
    leads = simulate(seed=3, count=80, sellers=[team.seller.id, team.seller2.id], heads=[team.rop.id])
    await store(uow_factory, leads, created_by=team.rop.id)


def pages_of(data: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(data))
    for page in reader.pages:
        assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == A4_POINTS
    return [page.extract_text() for page in reader.pages]


async def test_report_in_russian_from_the_bot(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory, generated: None
) -> None:
    await harness.send(team.rop, "/report")
    assert "PDF-отчёт" in harness.last_text(team.rop.chat_id)
    await harness.click(team.rop, StatsCB(kind=ReportKind.PDF, period=PeriodChoice.RANGE))
    await harness.send(team.rop, "27.10.2026-25.11.2026")
    sent = harness.session.of(SendDocument)
    assert len(sent) == 1 and isinstance(sent[0].document, BufferedInputFile)
    assert sent[0].document.filename == "report-2026-10-27-2026-11-25.pdf"
    pages = pages_of(sent[0].document.data)
    # Tables on the first two pages, then the four charts two to a page.
    assert len(pages) == 4
    first = pages[0]
    assert "Отчёт по продажам" in first and "Период: 27.10.2026 — 25.11.2026" in first
    assert "Воронка по источникам" in first and "Рекомендация" in first
    assert "Продажник Иванов" in first and "Второй Продажник" in first
    async with uow_factory(read_only=True) as uow:
        summary = await uow.analytics.summary(team.rop.user, PERIOD)
    assert f"Создано: {summary.total.created}" in first
    assert "Причины отказов" in pages[1] and "Когорты по неделям" in pages[1]
    assert summary.reasons[0].reason.split()[0] in pages[1]


async def test_report_for_today_and_a_salesperson(harness: Harness, team: Team) -> None:
    await harness.click(team.seller, StatsCB(kind=ReportKind.PDF, period=PeriodChoice.TODAY))
    document = harness.session.of(SendDocument)[-1].document
    assert isinstance(document, BufferedInputFile)
    pages = pages_of(document.data)
    assert len(pages) == 1
    assert "Только ваши лиды" in pages[0] and "За этот период лидов нет." in pages[0]


async def test_api_report_in_english(
    client: httpx.AsyncClient, tokens: dict[str, str], team: Team, uow_factory: UnitOfWorkFactory, generated: None
) -> None:
    async with uow_factory() as uow:
        await uow.users.set_language(team.mop.user, "en")
        await uow.commit()
    response = await client.get(
        "/api/analytics/report.pdf", params={"from": "2026-10-27", "to": "2026-11-25"}, headers=bearer(tokens["mop"])
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert 'filename="report-2026-10-27-2026-11-25.pdf"' in response.headers["content-disposition"]
    pages = pages_of(response.content)
    assert len(pages) == 4
    assert "Sales report" in pages[0] and "Funnel by source" in pages[0] and "Рекомендация" in pages[0]

    refused = await client.get(
        "/api/analytics/report.pdf", params={"from": "2026-11-25", "to": "2026-10-27"}, headers=bearer(tokens["mop"])
    )
    assert refused.status_code == 400


def test_the_font_is_shipped_with_matplotlib() -> None:
    for path in pdf_report.FONT_FILES.values():
        assert path.is_file() and "matplotlib" in str(path)
    assert texts_for("en").t("report.title") == "Sales report"
