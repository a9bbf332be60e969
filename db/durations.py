"""Human-friendly durations for the config: ``90s``, ``15m``, ``2h``, ``1d``."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match:
            amount, unit = match.groups()
            return timedelta(**{_UNITS[unit]: int(amount)})
    raise ValueError(f"expected a duration like 90s, 15m, 2h or 1d, got {value!r}")


def parse_clock_range(value: Any) -> tuple[time, time]:
    """``09:00-20:00`` -> (09:00, 20:00)."""
    if isinstance(value, tuple | list) and len(value) == 2:
        return (time.fromisoformat(str(value[0])), time.fromisoformat(str(value[1])))
    if isinstance(value, str) and "-" in value:
        start, end = value.split("-", 1)
        try:
            return (time.fromisoformat(start.strip()), time.fromisoformat(end.strip()))
        except ValueError:
            pass
    raise ValueError(f"expected a time range like 09:00-20:00, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
ClockRange = Annotated[tuple[time, time], BeforeValidator(parse_clock_range)]


def in_working_hours(now: datetime, hours: ClockRange, tz: ZoneInfo) -> bool:
    """Whether ``now`` falls in ``[start, end)`` local; a range like 22:00-06:00 runs over midnight, and
    a range that starts where it ends is the whole day."""
    start, end = hours
    clock = now.astimezone(tz).time()
    if start == end:
        return True
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end
