"""What a renderer is and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiogram.types import InlineKeyboardMarkup

if TYPE_CHECKING:
    from bot.presentation.render_context import RenderContext
    from db.uow import UnitOfWork


@dataclass(slots=True, frozen=True)
class Rendered:
    text: str
    reply_markup: InlineKeyboardMarkup | None = None


class RenderError(RuntimeError):
    """An outbox row the presenter cannot turn into a message (an unknown kind): a programming error."""


# (context, read unit, payload facts, recipient's users.id or None) -> the message, or None when gone.
Renderer = Callable[["RenderContext", "UnitOfWork", dict[str, Any], int | None], Awaitable[Rendered | None]]
