"""Each Telegram update handled once across instances (webhook mode with ``[redis] url``).

Behind a load balancer Telegram's post of an update can reach an instance that dies while handling it;
Telegram (or the proxy) then posts it again, maybe to another instance. In webhook mode the bot answers
Telegram only once the update is handled (``bot.runner``), so an update whose instance died is posted
again rather than lost. What stops it from being handled twice is a mark in Redis, per update id:

- the mark is set the moment the update's effects are in place and before anything of it is visible:
  right after ``CommitBeforeTelegram`` commits the update's unit, before its first request to Telegram
  (the conversation step was saved before that, see ``STYLE``), or when the handler returns without a
  request;
- an update whose mark is there is skipped, silently. The check runs under the person's lock
  (``PersonIsolation``, Redis across instances), so a redelivery that arrives while the first instance
  is still at work waits and then finds the mark.

What remains (written down in docs/architecture.md): an instance killed in the instant between the
commit and the mark (one Redis round trip) leaves an update that is handled again; one killed after the
mark but before its reply arrived leaves a reply that is never sent. Marks expire after two days
(Telegram keeps an undelivered update for 24 hours).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

if TYPE_CHECKING:  # redis is imported only where it is configured (the command line starts faster)
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

MARK_TTL = timedelta(days=2)


@dataclass(slots=True)
class _Pending:
    ledger: UpdateLedger
    update_id: int
    marked: bool = False


# The update this task is handling and whether its mark is set (read by ``mark_current``).
_CURRENT: ContextVar[_Pending | None] = ContextVar("leadbot_update_once", default=None)


class UpdateLedger:
    """The marks of handled updates in Redis, under one bot's prefix."""

    def __init__(self, redis: Redis, bot_id: int) -> None:
        self.redis = redis
        self.prefix = f"leadbot:{bot_id}:update:"

    @classmethod
    def from_url(cls, url: str, bot_id: int) -> UpdateLedger:
        from redis.asyncio import Redis

        return cls(Redis.from_url(url), bot_id)

    async def handled(self, update_id: int) -> bool:
        return bool(await self.redis.exists(f"{self.prefix}{update_id}"))

    async def mark(self, update_id: int) -> None:
        await self.redis.set(f"{self.prefix}{update_id}", 1, ex=MARK_TTL)

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)


async def mark_current() -> None:
    """The update being handled has its effects in place: mark it (once). Outside an update: nothing."""
    pending = _CURRENT.get()
    if pending is not None and not pending.marked:
        pending.marked = True
        await pending.ledger.mark(pending.update_id)


class HandledOnceMiddleware(BaseMiddleware):
    """Outer middleware of updates: skips an update already handled, marks one when it is."""

    def __init__(self, ledger: UpdateLedger) -> None:
        self.ledger = ledger

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        if await self.ledger.handled(event.update_id):
            log.info("update %s was handled already (delivered again): skipped", event.update_id)
            return None
        token = _CURRENT.set(_Pending(self.ledger, event.update_id))
        try:
            result = await handler(event, data)
            # Returned normally (the errors router answers failures): handled, even if nothing was sent.
            await mark_current()
            return result
        finally:
            _CURRENT.reset(token)
