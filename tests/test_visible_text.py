"""``db.validation.visible_text``: the one rule for text people give, shared by the API and the bot."""

from __future__ import annotations

import pytest

from db.errors import InvalidInput
from db.validation import has_visible_text, visible_text


@pytest.mark.parametrize(
    "value",
    ["Иван Петров", "O'Brien", "a\nb\tc", "  padded  ", "😀", "٣", "\ue000", "é", "e\u0301", "Zoë\u200d"],
)
def test_visible_text_passes_unchanged(value: str) -> None:
    assert visible_text(value, "client_name") is value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "text_empty"),
        ("   ", "text_empty"),
        ("\n\t", "text_empty"),
        ("\u00a0\u3000", "text_empty"),
        ("\u200b", "text_invisible"),
        ("\u200c\u200d", "text_invisible"),
        ("\u2060\ufeff", "text_invisible"),
        ("\u0301", "text_invisible"),
        ("\u3164", "text_invisible"),
        ("\u2800", "text_invisible"),
        ("\x00", "text_control_character"),
        ("Иван\x00", "text_control_character"),
        ("\x1b[2J", "text_control_character"),
        ("a\rb", "text_control_character"),
        ("a\r", "text_control_character"),
        ("a\x7f", "text_control_character"),
        ("a\x85", "text_control_character"),
        ("a\ud800", "text_invalid_unicode"),
    ],
)
def test_visible_text_refuses(value: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        visible_text(value, "notes")
    assert (error.value.field, error.value.reason) == ("notes", reason)
    assert error.value.message.startswith("notes ")


def test_a_windows_line_break_is_a_line_break() -> None:
    assert visible_text("a\r\nb", "notes") == "a\r\nb"


def test_has_visible_text_for_optional_fields() -> None:
    assert has_visible_text("x", "notes") is True
    assert has_visible_text(" \u200b", "notes") is False
    with pytest.raises(InvalidInput):
        has_visible_text("\x00", "notes")
