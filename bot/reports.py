"""Rendering of the analytics (``db.analytics.Summary``): the /stats text and the charts as PNG pictures.

Charts are drawn with matplotlib's object API (``matplotlib.figure.Figure``) on the Agg backend (what
``savefig`` uses for PNG; pyplot, which would pick a display backend, is never imported): no display, no
pyplot state shared between threads, so a chart can be drawn in a worker thread while the
bot goes on. Labels are in the reader's language; DejaVu Sans (shipped with matplotlib) has Cyrillic.
Sized for a phone: 1200×900 pixels, large type, at most ``CHART_ROWS`` bars per chart.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta

from matplotlib.figure import Figure

from bot.presentation.views import cut, esc
from bot.texts import Texts
from db.analytics import Period, Summary

CHART_SIZE = (8.0, 6.0)  # inches
CHART_DPI = 150  # 1200×900 pixels: sharp on a phone, a few dozen kilobytes
CHART_ROWS = 8  # bars per chart: more would not be readable on a phone
TEXT_ROWS = 10  # lines per section of the text
FONT = "DejaVu Sans"
_COLORS = {"created": "#4C78A8", "in_work": "#F58518", "closed": "#54A24B", "refused": "#E45756"}


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def format_duration(value: timedelta | None, texts: Texts) -> str:
    if value is None:
        return "—"
    minutes = int(value.total_seconds() // 60)
    if minutes < 1:
        return texts.t("stats.duration.under_minute")
    if minutes < 60:
        return texts.t("stats.duration.minutes", m=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return texts.t("stats.duration.hours", h=hours, m=minutes)
    days, hours = divmod(hours, 24)
    return texts.t("stats.duration.days", d=days, h=hours)


def format_day(day: date) -> str:
    return f"{day.day:02d}.{day.month:02d}.{day.year}"


def period_text(period: Period) -> str:
    first, last = period.first, period.last
    return format_day(first) if first == last else f"{format_day(first)} — {format_day(last)}"


def period_label(summary: Summary) -> str:
    return period_text(summary.period)


# ---- text --------------------------------------------------------------------------------------------


def stats_text(summary: Summary, texts: Texts) -> str:
    """The figures as Telegram HTML (source names, salespeople and reasons escaped), within 4096 characters."""
    t = texts.t
    total = summary.total
    title = t("stats.title_own" if summary.own_only else "stats.title", period=period_label(summary))
    if total.created == 0:
        return f"{title}\n\n{t('stats.empty')}"
    parts = [
        title,
        t(
            "stats.total",
            created=total.created,
            in_work=total.in_work,
            closed=total.closed,
            conversion=percent(total.conversion),
            refused=total.refused,
            refusal_rate=percent(total.refusal_rate),
        ),
    ]
    lines = [t("stats.sources")]
    for funnel in summary.sources[:TEXT_ROWS]:
        lines.append(
            t(
                "stats.source_row",
                source=esc(funnel.source),
                created=funnel.created,
                in_work=funnel.in_work,
                closed=funnel.closed,
                conversion=percent(funnel.conversion),
                refused=funnel.refused,
                refusal_rate=percent(funnel.refusal_rate),
            )
        )
    if len(summary.sources) > TEXT_ROWS:
        lines.append(t("stats.more", count=len(summary.sources) - TEXT_ROWS))
    parts.append("\n".join(lines))
    if summary.sellers:
        lines = [t("stats.sellers")]
        for seller in summary.sellers[:TEXT_ROWS]:
            lines.append(
                t(
                    "stats.seller_row",
                    name=esc(seller.name),
                    assigned=seller.assigned,
                    closed=seller.closed,
                    conversion=percent(seller.conversion),
                    refused=seller.refused,
                    waiting=seller.waiting,
                    median=format_duration(seller.median_response, texts),
                    p90=format_duration(seller.p90_response, texts),
                )
            )
        if len(summary.sellers) > TEXT_ROWS:
            lines.append(t("stats.more", count=len(summary.sellers) - TEXT_ROWS))
        if summary.unassigned:
            lines.append(t("stats.unassigned", count=summary.unassigned))
        parts.append("\n".join(lines))
    if summary.reasons:
        lines = [t("stats.reasons")]
        lines += [
            t("stats.reason_row", reason=esc(reason.reason), count=reason.count)
            for reason in summary.reasons[:TEXT_ROWS]
        ]
        parts.append("\n".join(lines))
    if summary.cohorts:
        lines = [t("stats.cohorts")]
        for cohort in summary.cohorts[-TEXT_ROWS:]:
            lines.append(
                t(
                    "stats.cohort_row",
                    week=format_day(cohort.week_start),
                    created=cohort.created,
                    closed=cohort.closed,
                    conversion=percent(cohort.conversion),
                )
            )
        parts.append("\n".join(lines))
    return cut("\n\n".join(parts))


# ---- charts ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chart:
    name: str  # a file name: funnel.png
    png: bytes


def _figure() -> Figure:
    figure = Figure(figsize=CHART_SIZE, dpi=CHART_DPI, layout="constrained")
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _style(figure: Figure) -> None:
    for ax in figure.axes:
        for label in (*ax.get_xticklabels(), *ax.get_yticklabels()):
            label.set_fontfamily(FONT)
        ax.spines[["top", "right"]].set_visible(False)


def funnel_chart(summary: Summary, texts: Texts) -> Chart:
    figure = _figure()
    ax = figure.add_subplot()
    sources = summary.sources[:CHART_ROWS][::-1]
    names = [_short(s.source) for s in sources]
    series = [
        ("created", [s.created for s in sources]),
        ("in_work", [s.in_work for s in sources]),
        ("closed", [s.closed for s in sources]),
        ("refused", [s.refused for s in sources]),
    ]
    height = 0.2
    for index, (key, values) in enumerate(series):
        positions = [i + (1.5 - index) * height for i in range(len(sources))]
        ax.barh(positions, values, height=height, color=_COLORS[key], label=texts.t(f"stats.chart.{key}"))
    ax.set_yticks(range(len(sources)), names, fontsize=13)
    ax.tick_params(axis="x", labelsize=12)
    ax.set_title(texts.t("stats.chart.funnel"), fontsize=16, fontfamily=FONT)
    ax.legend(fontsize=12, loc="lower right", prop={"family": FONT, "size": 12})
    _style(figure)
    return Chart("funnel.png", _png(figure))


def conversion_chart(summary: Summary, texts: Texts) -> Chart:
    figure = _figure()
    ax = figure.add_subplot()
    sources = summary.sources[:CHART_ROWS][::-1]
    values = [(s.conversion or 0.0) * 100 for s in sources]
    bars = ax.barh([_short(s.source) for s in sources], values, color=_COLORS["closed"])
    ax.bar_label(bars, labels=[percent(s.conversion) for s in sources], padding=4, fontsize=13)
    ax.set_xlim(0, max([*values, 10.0]) * 1.2)
    ax.tick_params(labelsize=13)
    ax.set_xlabel("%", fontsize=13)
    ax.set_title(texts.t("stats.chart.conversion"), fontsize=16, fontfamily=FONT)
    _style(figure)
    return Chart("conversion.png", _png(figure))


def response_chart(summary: Summary, texts: Texts) -> Chart:
    figure = _figure()
    ax = figure.add_subplot()
    sellers = [s for s in summary.sellers if s.median_response is not None][:CHART_ROWS][::-1]
    if sellers:
        names = [_short(s.name) for s in sellers]
        medians = [s.median_response.total_seconds() / 3600 if s.median_response else 0.0 for s in sellers]
        p90s = [s.p90_response.total_seconds() / 3600 if s.p90_response else 0.0 for s in sellers]
        height = 0.38
        ax.barh([i + height / 2 for i in range(len(sellers))], medians, height=height, color=_COLORS["created"])
        ax.barh([i - height / 2 for i in range(len(sellers))], p90s, height=height, color=_COLORS["in_work"])
        ax.set_yticks(range(len(sellers)), names, fontsize=13)
        ax.legend(
            [texts.t("stats.chart.median"), texts.t("stats.chart.p90")],
            loc="lower right",
            prop={"family": FONT, "size": 12},
        )
    else:
        ax.text(0.5, 0.5, texts.t("stats.chart.no_answers"), ha="center", va="center", fontsize=14, fontfamily=FONT)
        ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=12)
    ax.set_xlabel(texts.t("stats.chart.hours"), fontsize=13, fontfamily=FONT)
    ax.set_title(texts.t("stats.chart.response"), fontsize=16, fontfamily=FONT)
    _style(figure)
    return Chart("response.png", _png(figure))


def daily_chart(summary: Summary, texts: Texts) -> Chart:
    figure = _figure()
    ax = figure.add_subplot()
    days = [d.day for d in summary.daily]
    counts = [d.created for d in summary.daily]
    ax.bar(range(len(days)), counts, color=_COLORS["created"])
    step = max(1, len(days) // 8)
    ticks = list(range(0, len(days), step))
    ax.set_xticks(ticks, [f"{days[i].day:02d}.{days[i].month:02d}" for i in ticks], fontsize=12, rotation=30)
    ax.tick_params(axis="y", labelsize=12)
    ax.set_title(texts.t("stats.chart.daily"), fontsize=16, fontfamily=FONT)
    _style(figure)
    return Chart("daily.png", _png(figure))


def charts(summary: Summary, texts: Texts) -> list[Chart]:
    """The four charts of /stats (CPU work: call it in a worker thread)."""
    return [
        funnel_chart(summary, texts),
        conversion_chart(summary, texts),
        response_chart(summary, texts),
        daily_chart(summary, texts),
    ]
