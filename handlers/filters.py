"""Cheap filters for the routers, and the state-scoped sub-router every conversation uses.

aiogram awaits a ``Filter`` subclass directly, whereas a bare magic filter (``F.text``) is a plain
callable, which aiogram runs in a worker thread: one thread hop per check, on every message that
reaches it. These do the same checks on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiogram import Router
from aiogram.enums import ChatType
from aiogram.filters import Filter, StateFilter
from aiogram.filters.callback_data import CallbackData, CallbackQueryFilter
from aiogram.fsm.state import StatesGroup
from aiogram.types import CallbackQuery, Message


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


class CallbackPrefix(Filter):
    """The button's data belongs to one of ``classes`` (by its prefix, without unpacking it)."""

    def __init__(self, classes: set[type[CallbackData]]) -> None:
        separators = {cls.__separator__ for cls in classes}
        if len(separators) != 1:
            raise ValueError("callback data classes of one router must share their separator")
        self.separator = separators.pop()
        self.prefixes = frozenset(cls.__prefix__ for cls in classes)

    async def __call__(self, query: CallbackQuery) -> bool:
        data = query.data
        return data is not None and data.partition(self.separator)[0] in self.prefixes


def callbacks_by_prefix(router: Router) -> Router:
    """Let into ``router`` only the button presses some handler of it (or of its sub-routers) filters on.

    aiogram tries a router's handlers one by one, and each typed ``CallbackData`` filter unpacks the
    data and fails with an exception when it is another class's: a press for the lists paid for
    every card handler before it. One prefix check at the router skips them all. A router with a
    handler that takes any press (no ``CallbackData`` filter) is left as it is.
    """
    classes: set[type[CallbackData]] = set()
    for each in _routers(router):
        for handler in each.callback_query.handlers:
            found = [
                f.callback.callback_data for f in handler.filters or () if isinstance(f.callback, CallbackQueryFilter)
            ]
            if not found:
                return router
            classes.update(found)
    if classes:
        router.callback_query.filter(CallbackPrefix(classes))
    return router


def _routers(router: Router) -> Iterator[Router]:
    yield router
    for sub_router in router.sub_routers:
        yield from _routers(sub_router)
