"""/integrations (admins): each configured CRM integration's queue, links, last success and error, the
latest failed jobs, "Retry failed" per integration and "Refresh".

A retry is written and committed (before the view is redrawn in Telegram), then the running integration's
worker (``dispatcher["sync_workers"]``, set by ``bot.runner``) is woken so the jobs go at once; without
one (a dispatcher built alone, as in the tests) they wait for the next ``leadbot run`` or ``leadbot sync``.
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot.config import Settings
from bot.middlewares import WRITES
from bot.presentation.integrations import integration_name, render_integrations
from bot.texts import Texts
from db.integrations import INTEGRATIONS, overviews, retry_failed
from db.permissions import Actor
from db.uow import UnitOfWork
from integrations.worker import SyncWorker
from keyboards.callbacks import IntegrationsAction, IntegrationsCB
from keyboards.integrations import integrations_keyboard


def configured(settings: Settings) -> list[str]:
    return [name for name in INTEGRATIONS if name in settings.integrations]


async def view(
    uow: UnitOfWork, actor: Actor, texts: Texts, settings: Settings
) -> tuple[str, InlineKeyboardMarkup | None]:
    items = await overviews(uow, actor, configured(settings))
    markup = integrations_keyboard(texts, items) if items else None
    return render_integrations(texts, items, settings.crm.tz), markup


async def cmd_integrations(message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = await view(uow, actor, texts, settings)
    await message.answer(text, reply_markup=markup)


async def on_refresh(query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = await view(uow, actor, texts, settings)
    if isinstance(query.message, Message):
        await query.message.edit_text(text, reply_markup=markup)
    await query.answer()


async def on_retry(
    query: CallbackQuery,
    callback_data: IntegrationsCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    sync_workers: dict[str, SyncWorker] | None = None,
) -> None:
    code = callback_data.integration
    name = code.value if code is not None and code.value in settings.integrations else None
    count = await retry_failed(uow, actor, name) if name is not None else 0
    text, markup = await view(uow, actor, texts, settings)  # refuses anyone but an admin
    if isinstance(query.message, Message):
        await query.message.edit_text(text, reply_markup=markup)
    if name is None:  # a button from before the settings changed: the view is redrawn without it
        await query.answer(texts.t("integrations.not_configured", name=integration_name(texts, code)) if code else None)
        return
    label = integration_name(texts, name)
    await query.answer(
        texts.t("integrations.retried", name=label, count=count)
        if count
        else texts.t("integrations.nothing_to_retry", name=label)
    )
    # Woken once the retry is committed (before the first request to Telegram, bot.middlewares).
    worker = (sync_workers or {}).get(name)
    if count and worker is not None:
        worker.wake()


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_integrations, Command("integrations"))
    router.callback_query.register(on_refresh, IntegrationsCB.filter(F.action == IntegrationsAction.REFRESH))
    router.callback_query.register(
        on_retry, IntegrationsCB.filter(F.action == IntegrationsAction.RETRY_FAILED), flags=WRITES
    )
    return router
