"""Telegram HTML made safe for the demo page, and made plain for the Bot API's answers.

The bot formats its messages in Telegram's HTML (``parse_mode=HTML``). The page shows them the way a
Telegram client would, so it keeps the formatting Telegram knows, but only a short list of tags is let
through: ``<b> <i> <u> <s> <code> <pre>`` and ``<a href>`` with a web or ``tg:`` address. Everything
else (other tags, every other attribute, a ``javascript:`` link) is shown as text, escaped. Tags are
balanced: a stray closing tag is text, an unclosed one is closed at the end. A bare web address becomes a
link, as Telegram's apps show it.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset({"b", "i", "u", "s", "code", "pre", "a"})
# Telegram's synonyms for the allowed tags.
_SYNONYMS = {"strong": "b", "em": "i", "ins": "u", "strike": "s", "del": "s"}
_LINK_SCHEMES = ("http://", "https://", "tg://", "mailto:")
# A bare address in the text, which a Telegram client shows as a link (trailing punctuation left out).
_BARE_URL = re.compile(r"https?://[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = _SYNONYMS.get(tag, tag)
        if name not in ALLOWED_TAGS:
            self.out.append(html.escape(self.get_starttag_text() or f"<{tag}>"))
            return
        if name == "a":
            href = dict(attrs).get("href") or ""
            if not href.strip().lower().startswith(_LINK_SCHEMES):
                self.out.append(html.escape(self.get_starttag_text() or "<a>"))
                return
            self.out.append(_link(href.strip()))
        else:
            self.out.append(f"<{name}>")
        self.open.append(name)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.out.append(html.escape(self.get_starttag_text() or f"<{tag}/>"))

    def handle_endtag(self, tag: str) -> None:
        name = _SYNONYMS.get(tag, tag)
        if name in ALLOWED_TAGS and name in self.open:
            while self.open:
                closing = self.open.pop()
                self.out.append(f"</{closing}>")
                if closing == name:
                    break
            return
        self.out.append(html.escape(f"</{tag}>"))

    def handle_data(self, data: str) -> None:
        if "a" in self.open:
            self.out.append(html.escape(data, quote=False))
            return
        self.out.append(_linkified(data))

    def handle_comment(self, data: str) -> None:
        self.out.append(html.escape(f"<!--{data}-->"))

    def handle_decl(self, decl: str) -> None:
        self.out.append(html.escape(f"<!{decl}>"))

    def handle_pi(self, data: str) -> None:
        self.out.append(html.escape(f"<?{data}>"))

    def unknown_decl(self, data: str) -> None:
        self.out.append(html.escape(f"<![{data}]>"))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{name}>" for name in reversed(self.open))


def _link(href: str) -> str:
    return f'<a href="{html.escape(href, quote=True)}" target="_blank" rel="noopener noreferrer">'


def _linkified(text: str) -> str:
    """``text`` escaped, its bare web addresses made links."""
    out, last = [], 0
    for match in _BARE_URL.finditer(text):
        out.append(html.escape(text[last : match.start()], quote=False))
        out.append(_link(match.group(0)) + html.escape(match.group(0), quote=False) + "</a>")
        last = match.end()
    out.append(html.escape(text[last:], quote=False))
    return "".join(out)


def safe_html(text: str, parse_mode: str | None = "HTML") -> str:
    """What the page may put into ``innerHTML`` for a message sent with ``parse_mode``."""
    if (parse_mode or "").upper() != "HTML":
        return _linkified(text)
    parser = _Sanitizer()
    parser.feed(text)
    return parser.result()


class _Plain(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(text: str, parse_mode: str | None = "HTML") -> str:
    """The message's text as Telegram hands it back: the markup gone, the entities decoded."""
    if (parse_mode or "").upper() != "HTML":
        return text
    parser = _Plain()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)
