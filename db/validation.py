"""Parsing and cleaning of user input shared by the bot, the API and imports."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import date
from functools import lru_cache

import phonenumbers

from db.errors import InvalidInput

MAX_NAME = 200
MAX_NOTES = 2000
MAX_COMMENT = 2000
MAX_REASON = 500
MAX_BUDGET = 1e12

# Control characters (Unicode category Cc) but newline and tab: what no typed text needs.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BUDGET = re.compile(r"^(\d+(?:[.,]\d+)?)\s*([kmкм]|тыс|млн)?$", re.IGNORECASE)
_MULTIPLIERS = {"k": 1e3, "к": 1e3, "тыс": 1e3, "m": 1e6, "м": 1e6, "млн": 1e6}


@lru_cache(maxsize=64)
def example_phone(region: str) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        return "+998901234567"
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def normalize_phone(raw: str, region: str) -> str:
    """Any common way of writing a number -> E.164, or InvalidInput naming a valid example."""
    text = (raw or "").strip()
    example = example_phone(region)
    if not text or re.search(r"[^\d\s+()\-.]", text):
        raise InvalidInput("phone_number", "phone_invalid", f"invalid phone number; e.g. {example}", example=example)
    digits = re.sub(r"\D", "", text)
    candidates = [text]
    if not text.startswith("+"):
        # "998901234567" is the international form written without its plus.
        candidates.append("+" + digits)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidInput("phone_number", "phone_invalid", f"invalid phone number; e.g. {example}", example=example)


@lru_cache(maxsize=8192)
def format_phone(e164: str) -> str:
    """``+998 90 123 45 67``. Lists show ten numbers a page, each costing about as much as a query
    when parsed, so a stored (E.164) number is taken apart by hand and only formatted."""
    number = _from_e164(e164)
    if number is None:
        try:
            number = phonenumbers.parse(e164, None)
        except phonenumbers.NumberParseException:
            return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _from_e164(e164: str) -> phonenumbers.PhoneNumber | None:
    """What ``phonenumbers.parse`` makes of a well-formed E.164 number, or None to let it parse."""
    digits = e164[1:]
    if not (e164.startswith("+") and digits.isascii() and digits.isdigit() and len(digits) <= 15):
        return None
    # Country codes are prefix-free, 1 to 3 digits: the first known prefix is the code, as in parse.
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if not national or national[0] == "0":
                return None  # leading zeros (Italy and a few more) are flags parse sets
            return phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    return None


def clean_name(raw: str | None) -> str:
    name = " ".join((typed_text(raw or "", "client_name") or "").split())
    if not name:
        raise InvalidInput("client_name", "name_empty", "client name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(
            "client_name", "name_too_long", f"client name is longer than {MAX_NAME} characters", limit=MAX_NAME
        )
    return name


# Letters that draw nothing: Hangul fillers, the Mongolian vowel separator, the braille blank.
_BLANK_GRAPHEMES = frozenset("\u115f\u1160\u3164\uffa0\u180e\u2800")
# Visible: letters, digits, punctuation, symbols (Unicode categories L*, N*, P*, S*) and private-use
# characters (Co), which fonts draw as icons.
_VISIBLE_CATEGORIES = ("L", "N", "P", "S", "Co")


def visible_text(value: str, field: str) -> str:
    """The rule for every piece of text a person types or a system sends (names, notes, comments,
    reasons, search text), for the bot as for the HTTP API: ``value`` itself, or ``InvalidInput``.

    Refused, with ``reason``:

    - ``text_invalid_unicode``: a lone surrogate (JSON can carry ``"\\ud800"``; it is no character);
    - ``text_control_character``: a control character other than newline, tab and a Windows line break
      (NUL, ESC, BEL, a lone carriage return, DEL, the C1 range) — they cut search patterns and corrupt
      what is shown;
    - ``text_empty``: nothing but whitespace;
    - ``text_invisible``: no visible character, only characters that draw nothing (zero-width space
      U+200B, joiners U+200C/U+200D, word joiner U+2060, BOM U+FEFF, the other format characters, lone
      combining marks, Hangul fillers, blank braille) — how an invisible client name is faked.

    A visible character is a letter, digit, punctuation mark, symbol or private-use character.
    Nothing is trimmed or changed here: cleaning (``clean_name``, ``clean_text``) stays where it was.
    """
    visible = False
    for index, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidInput(field, "text_invalid_unicode", f"{field} must be valid Unicode text")
        if category == "Cc" and char not in "\n\t" and not (char == "\r" and value[index + 1 : index + 2] == "\n"):
            raise InvalidInput(
                field,
                "text_control_character",
                f"{field} must not contain control characters (U+{ord(char):04X}); only newline and tab are allowed",
                character=f"U+{ord(char):04X}",
            )
        if not visible and category.startswith(_VISIBLE_CATEGORIES) and char not in _BLANK_GRAPHEMES:
            visible = True
    if not visible:
        if value.strip():  # something is there, but nothing that shows
            raise InvalidInput(field, "text_invisible", f"{field} must contain a visible character")
        raise InvalidInput(field, "text_empty", f"{field} must contain a visible character")
    return value


def typed_text(value: str, field: str = "text") -> str | None:
    """What a person typed, cleaned for keeping: ``visible_text``'s rule, a Windows line break (CR LF)
    read as a newline, surrounding whitespace trimmed; None when nothing but whitespace was typed (the
    caller's "empty")."""
    value = value.replace("\r\n", "\n")
    if not value.strip():
        return None
    return visible_text(value, field).strip()


def has_visible_text(value: str, field: str) -> bool:
    """Whether ``value`` has a visible character; invalid Unicode and control characters still raise
    ``InvalidInput`` (see ``visible_text``). For optional text, where "nothing visible" means "none"."""
    try:
        visible_text(value, field)
    except InvalidInput as error:
        if error.reason in ("text_empty", "text_invisible"):
            return False
        raise
    return True


def fold_for_search(text: str | None) -> str:
    """The form names are stored and searched in: NFKC, Unicode case-folded, «ё» read as «е».

    SQLite's own lower()/LIKE fold ASCII only, so «иван» would not find «Иван» there.
    """
    return unicodedata.normalize("NFKC", " ".join((text or "").split())).casefold().replace("ё", "е")


def clean_text(raw: str | None, field: str, limit: int, *, required: bool = True) -> str | None:
    text = typed_text(raw or "", field)
    if not text:
        if required:
            raise InvalidInput(field, "text_empty", f"{field} must not be empty")
        return None
    if len(text) > limit:
        raise InvalidInput(field, "text_too_long", f"{field} is longer than {limit} characters", limit=limit)
    return text


def check_budget(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not math.isfinite(value) or value < 0 or value > MAX_BUDGET:
        raise InvalidInput("budget", "budget_invalid", "budget must be a non-negative number")
    return float(value)


def parse_budget(raw: str) -> float:
    """``50000``, ``50 000``, ``50,000``, ``50k``, ``1.5m``, ``50 тыс`` -> a number."""
    text = (raw or "").strip().lower().replace("$", "").replace("\u00a0", " ")
    text = re.sub(r"(?<=\d)[ '](?=\d{3}\b)", "", text)
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    match = _BUDGET.match(text.strip())
    if not match:
        raise InvalidInput("budget", "budget_invalid", "budget must be a number like 50000, 50 000 or 50k")
    amount = float(match.group(1).replace(",", "."))
    if match.group(2):
        amount *= _MULTIPLIERS[match.group(2).lower()]
    result = check_budget(amount)
    assert result is not None
    return result


def parse_date(raw: str) -> date:
    """``2025-12-05`` or ``05.12.2025``."""
    text = (raw or "").strip()
    for pattern, order in ((r"(\d{4})-(\d{1,2})-(\d{1,2})", "ymd"), (r"(\d{1,2})\.(\d{1,2})\.(\d{4})", "dmy")):
        match = re.fullmatch(pattern, text)
        if match:
            parts = dict(zip(order, map(int, match.groups()), strict=True))
            try:
                return date(parts["y"], parts["m"], parts["d"])
            except ValueError:
                break
    raise InvalidInput("closing_date", "date_invalid", "date must look like 2025-12-05 or 05.12.2025")
