"""/stats: the period's funnel, salespeople, refusal reasons and cohorts as text, with the charts as one
album; /report: the same period picker, answered with the PDF report (``bot.pdf_report``).

A period is a button (today, 7 days, 30 days, this month) or typed ("01.11.2026-30.11.2026") in a small
conversation. The figures are read in the update's read unit, which is committed (its connection given
back) before the charts are drawn in a worker thread and sent.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import BufferedInputFile, CallbackQuery, InputMediaPhoto, Message

from bot import pdf_report, reports
from bot.config import Settings
from bot.texts import Texts
from db import permissions
from db.analytics import MAX_PERIOD_DAYS, Period
from db.errors import InvalidInput
from db.permissions import Actor
from db.uow import UnitOfWork
from handlers.filters import HasText, conversation_router
from keyboards.stats import PeriodChoice, ReportKind, StatsCB, period_picker

_RANGE = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})\.(\d{4})\s*[-–—]\s*(\d{1,2})\.(\d{1,2})\.(\d{4})\s*$")


class StatsStates(StatesGroup):
    stats_range = State()
    report_range = State()


_RANGE_STATE = {ReportKind.STATS: StatsStates.stats_range, ReportKind.PDF: StatsStates.report_range}


def parse_range(text: str) -> Period | None:
    """``01.11.2026-30.11.2026`` (any dash, spaces allowed) as a period, or None when it is not one."""
    match = _RANGE.match(text)
    if match is None:
        return None
    d1, m1, y1, d2, m2, y2 = (int(part) for part in match.groups())
    try:
        return Period(date(y1, m1, d1), date(y2, m2, d2))
    except (ValueError, InvalidInput):
        return None


def today(settings: Settings) -> date:
    return datetime.now(settings.crm.tz).date()


def chosen_period(choice: PeriodChoice, day: date) -> Period:
    if choice == PeriodChoice.TODAY:
        return Period.today(day)
    if choice == PeriodChoice.WEEK:
        return Period.last_days(day, 7)
    if choice == PeriodChoice.DAYS30:
        return Period.last_days(day, 30)
    return Period.this_month(day)


async def deliver(
    bot: Bot, chat_id: int, kind: ReportKind, period: Period, actor: Actor, uow: UnitOfWork, texts: Texts
) -> None:
    summary = await uow.analytics.summary(actor, period)
    await uow.commit()  # the figures are read: nothing below holds a connection
    if kind == ReportKind.PDF:
        document = await asyncio.to_thread(pdf_report.render, summary, texts)
        await bot.send_document(chat_id, BufferedInputFile(document, filename=pdf_report.report_name(summary)))
        return
    if summary.total.created:
        pictures = await asyncio.to_thread(reports.charts, summary, texts)
        await bot.send_media_group(
            chat_id, media=[InputMediaPhoto(media=BufferedInputFile(c.png, filename=c.name)) for c in pictures]
        )
    await bot.send_message(chat_id, reports.stats_text(summary, texts))


async def _start(message: Message, actor: Actor, texts: Texts, kind: ReportKind) -> None:
    if message.chat.type != ChatType.PRIVATE:
        await message.answer(texts.t("reports.private_only"))
        return
    if not permissions.can_view_analytics(actor):
        await message.answer(texts.t("stats.forbidden"))
        return
    prompt = "stats.choose" if kind == ReportKind.STATS else "report.choose"
    await message.answer(texts.t(prompt), reply_markup=period_picker(texts, kind))


async def cmd_stats(message: Message, actor: Actor, texts: Texts) -> None:
    await _start(message, actor, texts, ReportKind.STATS)


async def cmd_report(message: Message, actor: Actor, texts: Texts) -> None:
    await _start(message, actor, texts, ReportKind.PDF)


async def on_period(
    query: CallbackQuery,
    callback_data: StatsCB,
    bot: Bot,
    state: FSMContext,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
) -> None:
    if not permissions.can_view_analytics(actor):
        await query.answer(texts.t("stats.forbidden"), show_alert=True)
        return
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await query.answer()
    if callback_data.period == PeriodChoice.RANGE:
        await state.set_state(_RANGE_STATE[callback_data.kind])
        await bot.send_message(chat_id, texts.t("stats.ask_range"))
        return
    period = chosen_period(callback_data.period, today(settings))
    await deliver(bot, chat_id, callback_data.kind, period, actor, uow, texts)


async def on_range(message: Message, bot: Bot, state: FSMContext, actor: Actor, uow: UnitOfWork, texts: Texts) -> None:
    period = parse_range(message.text or "")
    if period is None:
        await message.answer(texts.t("stats.range_invalid", days=MAX_PERIOD_DAYS))
        return
    kind = ReportKind.PDF if await state.get_state() == StatsStates.report_range.state else ReportKind.STATS
    await state.clear()
    await deliver(bot, message.chat.id, kind, period, actor, uow, texts)


async def on_range_not_text(message: Message, texts: Texts) -> None:
    await message.answer(texts.t("stats.range_invalid", days=MAX_PERIOD_DAYS))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_stats, Command("stats"))
    router.message.register(cmd_report, Command("report"))
    router.callback_query.register(on_period, StatsCB.filter(F.period.in_(set(PeriodChoice))))
    steps = conversation_router(f"{__name__}.steps", StatsStates)
    steps.message.register(on_range, HasText())
    steps.message.register(on_range_not_text)
    router.include_router(steps)
    return router
