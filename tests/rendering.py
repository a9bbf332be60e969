"""Outbox rows as their recipients will read them: rendered by the presenter the delivery worker uses."""

from __future__ import annotations

from aiogram.types import InlineKeyboardMarkup

from bot.presentation.presenter import Presenter, Rendered
from db.models import OutboxMessage
from db.uow import UnitOfWorkFactory
from tests.fakes import buttons


async def rendered(factory: UnitOfWorkFactory, row: OutboxMessage) -> Rendered:
    """The message ``row`` becomes when it is sent now (in a read unit, as the worker does)."""
    async with factory(read_only=True) as uow:
        message = await Presenter(factory.settings).render(uow, row.kind, row.payload, user_id=row.user_id)
    assert message is not None, f"outbox row {row.idempotency_key} renders to nothing"
    return message


async def text_of(factory: UnitOfWorkFactory, row: OutboxMessage) -> str:
    return (await rendered(factory, row)).text


async def markup_of(factory: UnitOfWorkFactory, row: OutboxMessage) -> InlineKeyboardMarkup | None:
    return (await rendered(factory, row)).reply_markup


async def buttons_of(factory: UnitOfWorkFactory, row: OutboxMessage) -> list[tuple[str, str]]:
    markup = await markup_of(factory, row)
    return buttons(markup) if markup is not None else []
