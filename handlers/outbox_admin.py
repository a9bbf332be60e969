"""/outbox (admins): how many notifications wait and failed, the latest failures, and "Retry failed"."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot.config import Settings
from bot.middlewares import WRITES
from bot.presentation.views import cut, esc, user_label
from bot.texts import Texts
from db.enums import OutboxStatus
from db.permissions import Actor
from db.repositories.outbox import OutboxOverview
from db.uow import UnitOfWork
from keyboards.callbacks import MenuAction, MenuCB, OutboxAction, OutboxCB

ERROR_PREVIEW = 300


def render(texts: Texts, overview: OutboxOverview, settings: Settings) -> tuple[str, InlineKeyboardMarkup]:
    counts = overview.counts
    lines = [
        texts.t("outbox.title"),
        "",
        texts.t(
            "outbox.counts",
            pending=counts[OutboxStatus.PENDING],
            sending=counts[OutboxStatus.SENDING],
            sent=counts[OutboxStatus.SENT],
            failed=counts[OutboxStatus.FAILED],
        ),
        "",
    ]
    if overview.failed:
        lines.append(texts.t("outbox.failed_header"))
        for row, user in overview.failed:
            if user is not None:
                recipient = user_label(user)
            elif row.chat_id == settings.notifications.team_chat_id:
                recipient = texts.t("outbox.team_chat")
            else:
                recipient = f"<code>{row.chat_id}</code>"
            lines.append(
                texts.t(
                    "outbox.failed_row",
                    id=row.id,
                    kind=esc(row.kind),
                    recipient=recipient,
                    attempts=row.attempts,
                    error=cut(esc(row.last_error or "—"), ERROR_PREVIEW),
                )
            )
    else:
        lines.append(texts.t("outbox.no_failed"))
    builder = InlineKeyboardBuilder()
    if counts[OutboxStatus.FAILED]:
        builder.button(text=texts.t("outbox.btn.retry"), callback_data=OutboxCB(action=OutboxAction.RETRY_FAILED))
    builder.button(text=texts.t("outbox.btn.refresh"), callback_data=OutboxCB(action=OutboxAction.REFRESH))
    builder.adjust(1)
    return cut("\n".join(lines)), builder.as_markup()


async def cmd_outbox(message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = render(texts, await uow.outbox.overview(actor), settings)
    await message.answer(text, reply_markup=markup)


async def on_menu_outbox(query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = render(texts, await uow.outbox.overview(actor), settings)
    if query.message is not None:
        await query.message.answer(text, reply_markup=markup)
    await query.answer()


async def on_refresh(query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = render(texts, await uow.outbox.overview(actor), settings)
    if isinstance(query.message, Message):
        await query.message.edit_text(text, reply_markup=markup)
    await query.answer()


async def on_retry(query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    count = await uow.outbox.retry_failed(actor)
    text, markup = render(texts, await uow.outbox.overview(actor), settings)
    if isinstance(query.message, Message):
        await query.message.edit_text(text, reply_markup=markup)
    await query.answer(texts.t("outbox.retried", count=count) if count else texts.t("outbox.nothing_to_retry"))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_outbox, Command("outbox"))
    router.callback_query.register(on_menu_outbox, MenuCB.filter(F.action == MenuAction.OUTBOX))
    router.callback_query.register(on_refresh, OutboxCB.filter(F.action == OutboxAction.REFRESH))
    router.callback_query.register(on_retry, OutboxCB.filter(F.action == OutboxAction.RETRY_FAILED), flags=WRITES)
    return router
