"""/stats through the production dispatcher: the period picker, the album of charts, the figures as text."""

from __future__ import annotations

import io
from datetime import date

import pytest
from aiogram.methods import SendMediaGroup, SendMessage
from aiogram.types import BufferedInputFile
from PIL import Image

from bot import reports
from bot.texts import texts_for
from db.analytics import Period
from db.enums import LeadStatus
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from handlers.stats import parse_range
from keyboards.stats import PeriodChoice, ReportKind, StatsCB
from tests.analytics_data import in_period, simulate, store
from tests.conftest import Harness, Team


def album(harness: Harness, chat_id: int) -> list[bytes]:
    groups = [g for g in harness.session.of(SendMediaGroup) if int(g.chat_id) == chat_id]
    assert len(groups) == 1
    files = [item.media for item in groups[0].media]
    assert all(isinstance(f, BufferedInputFile) for f in files)
    return [f.data for f in files if isinstance(f, BufferedInputFile)]


def assert_pngs(pictures: list[bytes]) -> None:
    assert len(pictures) == 4
    for png in pictures:
        image = Image.open(io.BytesIO(png))
        image.load()
        assert image.format == "PNG"
        assert image.size == (1200, 900)


async def test_rop_picks_30_days_and_gets_charts_and_numbers(
    harness: Harness, team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    async with uow_factory() as uow:
        for n, source in enumerate(["Instagram", "Instagram", "Сайт"]):
            draft = LeadDraft(f"Клиент {n}", f"+99890111000{n}", source, assigned_to=team.seller.id)
            lead = await uow.leads.create(team.rop.user, draft)
            if n == 0:
                await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.IN_WORK)
                await uow.leads.change_status(team.seller.user, lead.id, LeadStatus.CLOSED)
            if n == 2:
                await uow.leads.change_status(team.rop.user, lead.id, LeadStatus.REFUSED, reason="Дорого <очень>")
        await uow.commit()

    await harness.send(team.rop, "/stats")
    captions = [text for text, _ in harness.last_buttons(team.rop.chat_id)]
    assert captions == ["Сегодня", "7 дней", "30 дней", "Этот месяц", "📅 Свой период"]
    await harness.press(team.rop, "30 дней")

    assert_pngs(album(harness, team.rop.chat_id))
    text = harness.last_text(team.rop.chat_id)
    assert "Статистика команды" in text
    assert "Создано: <b>3</b>" in text and "закрыто: <b>1</b> (33%)" in text
    assert "• Instagram: 2 → 1 → 1 (50%), отказ 0 (0%)" in text
    assert "• Сайт: 1 → 0 → 0 (0%), отказ 1 (100%)" in text
    assert "Дорого &lt;очень&gt; — 1" in text
    assert "Продажник Иванов: назначено 3, закрыто 1 (33%), отказ 1, ждут в «новом» 1" in text
    # The album comes before the text.
    kinds = [type(r) for r in harness.session.requests if isinstance(r, SendMediaGroup | SendMessage)]
    assert kinds[-2:] == [SendMediaGroup, SendMessage]


async def test_typed_range_matches_the_core(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    leads = simulate(seed=5, count=120, sellers=[team.seller.id, team.seller2.id], heads=[team.rop.id])
    await store(uow_factory, leads, created_by=team.rop.id)
    period = Period(date(2026, 10, 27), date(2026, 11, 25))

    await harness.send(team.mop, "/stats")
    await harness.click(team.mop, StatsCB(kind=ReportKind.STATS, period=PeriodChoice.RANGE))
    assert "01.11.2026-30.11.2026" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "вчера")
    assert "Не понял период" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "30.11.2026-01.11.2026")
    assert "Не понял период" in harness.last_text(team.mop.chat_id)
    await harness.send(team.mop, "27.10.2026 — 25.11.2026")

    assert_pngs(album(harness, team.mop.chat_id))
    async with uow_factory(read_only=True) as uow:
        summary = await uow.analytics.summary(team.mop.user, period)
    assert summary.total.created == len(in_period(leads, period.first, period.last))
    assert harness.last_text(team.mop.chat_id) == reports.stats_text(summary, texts_for("ru"))
    assert "&lt;b&gt;Спам&lt;/b&gt;" in harness.last_text(team.mop.chat_id)
    # The conversation is over: more text is not a period.
    await harness.send(team.mop, "01.11.2026-02.11.2026")
    assert len(harness.session.of(SendMediaGroup)) == 1


async def test_cancel_leaves_the_range_conversation(harness: Harness, team: Team) -> None:
    await harness.click(team.rop, StatsCB(kind=ReportKind.STATS, period=PeriodChoice.RANGE))
    await harness.send(team.rop, "/cancel")
    assert harness.last_text(team.rop.chat_id) == "Отменено."
    await harness.send(team.rop, "01.11.2026-02.11.2026")
    assert harness.session.of(SendMediaGroup) == []


async def test_a_salesperson_sees_only_their_own(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        await uow.leads.create(
            team.rop.user, LeadDraft("Свой", "+998901110001", "Instagram", assigned_to=team.seller.id)
        )
        await uow.leads.create(team.rop.user, LeadDraft("Чужой", "+998901110002", "Сайт", assigned_to=team.seller2.id))
        await uow.leads.create(team.rop.user, LeadDraft("Ничей", "+998901110003", "Сайт"))
        await uow.commit()
    await harness.click(team.seller, StatsCB(kind=ReportKind.STATS, period=PeriodChoice.WEEK))
    text = harness.last_text(team.seller.chat_id)
    assert "Ваша статистика" in text
    assert "Создано: <b>1</b>" in text and "Сайт" not in text and "Второй" not in text


async def test_empty_period_is_text_only(harness: Harness, team: Team) -> None:
    await harness.click(team.finance, StatsCB(kind=ReportKind.STATS, period=PeriodChoice.TODAY))
    assert harness.session.of(SendMediaGroup) == []
    assert "За этот период лидов нет." in harness.last_text(team.finance.chat_id)


async def test_not_in_a_group(harness: Harness, team: Team) -> None:
    await harness.send(team.rop, "/stats", chat_id=-100500)
    assert "только в личном чате" in harness.last_text(-100500)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("01.11.2026-30.11.2026", Period(date(2026, 11, 1), date(2026, 11, 30))),
        (" 1.11.2026 – 1.11.2026 ", Period(date(2026, 11, 1), date(2026, 11, 1))),
        ("31.11.2026-01.12.2026", None),
        ("01.11.2026", None),
        ("01.01.2020-01.01.2026", None),
    ],
)
def test_parse_range(text: str, expected: Period | None) -> None:
    assert parse_range(text) == expected


def test_english_charts_and_text_render() -> None:
    from db.analytics import DayCount, SourceFunnel, Summary

    period = Period(date(2026, 11, 1), date(2026, 11, 2))
    summary = Summary(
        period=period,
        timezone="UTC",
        own_only=False,
        total=SourceFunnel("", 1, 0, 0, 0),
        sources=[SourceFunnel("Реклама", 1, 0, 0, 0)],
        sellers=[],
        unassigned=1,
        reasons=[],
        cohorts=[],
        daily=[DayCount(period.first, 1), DayCount(period.last, 0)],
    )
    texts = texts_for("en")
    assert_pngs([chart.png for chart in reports.charts(summary, texts)])
    assert "Team statistics for 01.11.2026 — 02.11.2026" in reports.stats_text(summary, texts)


def test_every_role_has_the_report_commands() -> None:
    from bot.commands import command_names
    from db.enums import Role

    for role in Role:
        assert {"stats", "export", "report"} <= set(command_names(role)), role
        assert ("sheets" in command_names(role)) is (role == Role.ADMIN)
