"""Both languages carry the same keys with the same placeholders, and every template is valid HTML
for Telegram (balanced tags)."""

from __future__ import annotations

import re
import string

import pytest

from bot.texts import LANGUAGES, Texts, pick_language

_TAG = re.compile(r"</?([a-z]+)[^>]*>")


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_languages_have_the_same_keys() -> None:
    ru, en = LANGUAGES["ru"], LANGUAGES["en"]
    assert set(ru) - set(en) == set(), "missing in en.py"
    assert set(en) - set(ru) == set(), "missing in ru.py"


@pytest.mark.parametrize("key", sorted(LANGUAGES["ru"]))
def test_placeholders_and_tags_match(key: str) -> None:
    ru, en = LANGUAGES["ru"][key], LANGUAGES["en"][key]
    assert _fields(ru) == _fields(en)
    if key.startswith("cmd."):
        return  # plain text for Telegram's command menu, escaped wherever it is shown as HTML
    for template in (ru, en):
        stack: list[str] = []
        for match in _TAG.finditer(template):
            tag = match.group(1)
            if match.group(0).startswith("</"):
                assert stack and stack.pop() == tag, template
            else:
                stack.append(tag)
        assert not stack, template


def test_language_choice() -> None:
    assert pick_language(None, "en-US") == "en"
    assert pick_language(None, "uz") == "ru"
    assert pick_language(None, None) == "ru"
    assert pick_language("en", "ru") == "en"
    assert Texts("xx").lang == "ru"
