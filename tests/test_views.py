"""bot.views: the escaping and date formats every message uses."""

from __future__ import annotations

import html
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.views import esc, format_dt


@pytest.mark.parametrize(
    "value",
    ["", "Анна Ким", "a < b", "Tom & Jerry", "<b>жирный</b>", "&amp;", "'quotes' \"stay\"", 42, None, "x>y"],
)
def test_esc_is_html_escape_without_quotes(value: object) -> None:
    assert esc(value) == html.escape("" if value is None else str(value), quote=False)


@pytest.mark.parametrize("zone", ["Asia/Tashkent", "UTC", "America/St_Johns"])
def test_format_dt_is_the_strftime_format(zone: str) -> None:
    tz = ZoneInfo(zone)
    rng = random.Random(5)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    for _ in range(2_000):
        moment = start + timedelta(seconds=rng.randrange(40 * 365 * 86_400), microseconds=rng.randrange(10**6))
        assert format_dt(moment, tz) == moment.astimezone(tz).strftime("%d.%m.%Y %H:%M")
    assert format_dt(None, tz) == "—"
