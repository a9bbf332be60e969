"""Outbox rows become Telegram messages here, right before the delivery worker sends them.

The core (``db.notifications``, ``db.reminders``) writes outbox rows holding facts — a ``kind`` and what
it is about. ``Presenter.render`` turns such a row into a ``Rendered`` (text and keyboard, in the
recipient's language) right before the delivery worker sends it, in a short read unit of its own that
is left before the network call. The per-kind renderers live in ``notifications`` and ``reminders``;
the texts of the screens handlers show are built with ``views`` (formatting helpers) and ``cards``
(the lead card), all in ``bot.presentation``; the language tables are ``bot.texts``.

What a message shows, and when it was decided:

- the facts of the event are those captured at enqueue (old and new status, who did it, to whom the
  lead went, which comment, the reminder's number, which items a digest lists and its counts);
- how the lead, the people and the follow-up are described (name, phone, source, budget, names) is read
  at send time: the message shows the current state;
- when what the message is about was deleted in between (the lead, the comment, the follow-up),
  ``render`` returns ``None`` and the worker fails the row with ``GONE`` rather than talk about it.

A payload carrying ``"text"`` (``message_payload`` / ``edit_payload``) is a message rendered by its
writer and is sent as it is: tests, the benchmark, and rows queued before this format.
"""

from __future__ import annotations

from typing import Any

from aiogram.types import InlineKeyboardMarkup

from bot.presentation.base import Rendered, Renderer, RenderError
from bot.presentation.notifications import NOTIFICATION_RENDERERS
from bot.presentation.reminders import REMINDER_RENDERERS
from bot.presentation.render_context import RenderContext
from bot.presentation.views import cut
from db.uow import UnitOfWork

__all__ = ["GONE", "Presenter", "RenderError", "Rendered", "edit_payload", "message_payload"]

GONE = "not sent: what it was about was deleted before delivery"


def message_payload(text: str, markup: InlineKeyboardMarkup | None = None) -> dict[str, Any]:
    """The payload of a message rendered by its writer (sent as it is)."""
    return {
        "text": cut(text),
        "reply_markup": markup.model_dump(mode="json", exclude_none=True) if markup is not None else None,
    }


def edit_payload(edit_of: str, text: str, markup: InlineKeyboardMarkup | None = None) -> dict[str, Any]:
    """Edit the message another outbox row (``edit_of`` = its idempotency key) has sent."""
    return {"edit_of": edit_of, **message_payload(text, markup)}


class Presenter:
    """Outbox rows (kind + facts) to messages; the delivery worker's one call before each send."""

    def __init__(self, settings: Any) -> None:
        self.context = RenderContext(settings)
        self.renderers: dict[str, Renderer] = {**NOTIFICATION_RENDERERS, **REMINDER_RENDERERS}

    @staticmethod
    def plain(payload: dict[str, Any]) -> Rendered | None:
        """A payload that already holds its text (no database needed); None for a facts payload."""
        if "text" not in payload:
            return None
        markup = payload.get("reply_markup")
        return Rendered(str(payload["text"]), InlineKeyboardMarkup.model_validate(markup) if markup else None)

    async def render(
        self, uow: UnitOfWork, kind: str, payload: dict[str, Any], *, user_id: int | None
    ) -> Rendered | None:
        """The message for one row; None when what it is about is gone. Reads only."""
        plain = self.plain(payload)
        if plain is not None:
            return plain
        renderer = self.renderers.get(kind)
        if renderer is None:
            raise RenderError(f"no renderer for outbox kind {kind!r}")
        rendered = await renderer(self.context, uow, payload, user_id)
        return None if rendered is None else Rendered(cut(rendered.text), rendered.reply_markup)
