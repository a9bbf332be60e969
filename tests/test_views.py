"""bot.presentation.views and db.validation: the escaping, date and phone formats every message uses."""

from __future__ import annotations

import html
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest

from bot.presentation.views import esc, format_dt
from db.validation import format_phone


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


@pytest.mark.parametrize(
    "e164",
    [
        "+998901234567",
        "+998712345678",
        "+12025550123",
        "+74951234567",
        "+442071234567",
        "+390612345678",  # Italy: a leading zero parse keeps as a flag
        "+2250712345678",  # Côte d'Ivoire: the same
        "+80012345678",  # a non-geographic code
        "+8613912345678",
        "+35312345678",
        "+99890",  # too short to be valid: still shown as phonenumbers shows it
    ],
)
def test_a_stored_number_is_shown_as_phonenumbers_shows_it(e164: str) -> None:
    expected = phonenumbers.format_number(phonenumbers.parse(e164, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    assert format_phone(e164) == expected


@pytest.mark.parametrize("stored", ["", "+", "998901234567", "+99890123456789012", "+٩٩٨٩٠١٢٣٤٥٦٧", "+998 90 123"])
def test_a_number_that_is_not_e164_is_shown_as_it_is_or_as_parsed(stored: str) -> None:
    try:
        expected = phonenumbers.format_number(
            phonenumbers.parse(stored, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        expected = stored
    assert format_phone(stored) == expected
