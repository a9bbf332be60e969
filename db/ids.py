"""Numbers that arrive from outside (button data, command arguments): one parser per kind.

Each accepts ASCII digits only (``str.isdigit`` also takes "²" and "٣", which ``int`` then refuses)
within the range of the column the number is compared with: SQLite's INTEGER and PostgreSQL's BIGINT
are signed 64-bit, and a larger Python int fails in the driver instead of finding nothing. Anything
else is None, which the caller answers like a missing row: "not found", or the stale-button alert.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1
_MAX_DIGITS = len(str(MAX_ID))


def _digits(raw: str) -> int | None:
    """``raw`` as a number when it is ASCII digits up to ``MAX_ID``, else None."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    significant = raw.lstrip("0")
    if len(significant) > _MAX_DIGITS:  # checked before int(): no huge conversion for a forged run of digits
        return None
    number = int(significant or "0")
    return number if number <= MAX_ID else None


def parse_row_id(raw: str) -> int | None:
    """A row id (``leads.id``, ``users.id``, ``followups.id``…): 1..2^63-1, or None."""
    number = _digits(raw)
    return number if number is not None and number >= 1 else None


def parse_index(raw: str) -> int | None:
    """A page, a position in a list, or a row id where 0 means "none": 0..2^63-1, or None."""
    return _digits(raw)


def parse_telegram_id(raw: str) -> int | None:
    """A Telegram user or chat id (chats are negative): an optional minus and ASCII digits, not 0,
    within ±(2^63-1) (``users.telegram_id`` is BIGINT), or None."""
    number = _digits(raw[1:]) if raw.startswith("-") else _digits(raw)
    if not number:
        return None
    return -number if raw.startswith("-") else number
