"""All user-visible text: one module per language, the same keys in each.

``Texts(lang).t("key", **params)`` formats one string. Params that carry user-supplied text must be
escaped by the caller (``bot.presentation.views.esc``); the templates themselves are trusted HTML.
"""

from __future__ import annotations

from functools import cache

from bot.texts import en, ru

LANGUAGES = {"ru": ru.TEXTS, "en": en.TEXTS}
DEFAULT_LANGUAGE = "ru"


def pick_language(
    user_language: str | None, telegram_language: str | None = None, default: str = DEFAULT_LANGUAGE
) -> str:
    if user_language in LANGUAGES:
        return user_language
    if telegram_language:
        code = telegram_language.lower().split("-")[0]
        if code in LANGUAGES:
            return code
        # Uzbek and other CIS users read Russian more often than English.
        return "ru" if code in ("uz", "kk", "ky", "tg", "uk", "be") else "en"
    return default


class Texts:
    __slots__ = ("_table", "lang")

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        self._table = LANGUAGES[self.lang]

    def t(self, key: str, /, **params: object) -> str:
        template = self._table.get(key)
        if template is None:
            template = LANGUAGES[DEFAULT_LANGUAGE][key]
        return template.format(**params) if params else template

    def has(self, key: str) -> bool:
        return key in self._table


@cache
def texts_for(lang: str) -> Texts:
    return Texts(lang)
