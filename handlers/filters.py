"""Cheap filters for the routers, and the state-scoped sub-router every conversation uses.

aiogram awaits a ``Filter`` subclass directly, whereas a bare magic filter (``F.text``) is a plain
callable, which aiogram runs in a worker thread: one thread hop per check, on every message that
reaches it. These do the same checks on the event loop.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.enums import ChatType
from aiogram.filters import Filter, StateFilter
from aiogram.fsm.state import StatesGroup
from aiogram.types import Message


class HasText(Filter):
    """The message has text (not a photo, sticker, contact…)."""

    async def __call__(self, message: Message) -> bool:
        return message.text is not None


class HasContact(Filter):
    """The message is a shared Telegram contact."""

    async def __call__(self, message: Message) -> bool:
        return message.contact is not None


class TextIn(Filter):
    """The message text is one of ``words``, ignoring case and surrounding spaces."""

    def __init__(self, *words: str) -> None:
        self.words = frozenset(word.casefold() for word in words)

    async def __call__(self, message: Message) -> bool:
        return message.text is not None and message.text.strip().casefold() in self.words


# Typed instead of /cancel: what ``common`` takes as "leave the conversation".
CANCEL_WORDS = ("отмена", "cancel")


class ConversationInput(Filter):
    """What a conversation step may take: anything but a command or a cancel word.

    Those belong to ``handlers.common`` (other commands end the conversation before routing, see
    ``bot.middlewares.CommandLeavesConversationMiddleware``), so a step never swallows them whatever
    the order of the routers.
    """

    _cancel = frozenset(CANCEL_WORDS)

    async def __call__(self, message: Message) -> bool:
        text = message.text
        if text is None:
            return True
        return not text.startswith("/") and text.strip().casefold() not in self._cancel


class PrivateChat(Filter):
    """The message was written in a private chat with the bot (not in a group)."""

    async def __call__(self, message: Message) -> bool:
        return message.chat.type == ChatType.PRIVATE


def conversation_router(name: str, *groups: type[StatesGroup]) -> Router:
    """A sub-router for the steps of ``groups``' conversations.

    Its messages and button presses are checked against the state once, at the router, so an update
    outside these conversations skips all their step handlers with a single check instead of one per
    step. Commands and cancel words never reach the steps (``ConversationInput``).
    """
    router = Router(name=name)
    in_conversation = StateFilter(*groups)
    router.message.filter(in_conversation, ConversationInput())
    router.callback_query.filter(in_conversation)
    return router
