"""/import: a spreadsheet of leads, previewed, then imported and reported (``db.imports``).

/import sends the template and waits for a file; a manager may also simply send a spreadsheet. The file
is downloaded and previewed (nothing saved), with «Import» / «Cancel». On «Import» it is downloaded
again by its file id (the conversation keeps the id, not the rows) and imported, batch by batch, each
batch a transaction of its own (``LeadImporter`` opens them; none is open while the bot talks to
Telegram); then the report workbook lists every row's outcome.
"""

from __future__ import annotations

import io

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, Filter, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import BufferedInputFile, CallbackQuery, Document, InlineKeyboardMarkup, Message
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import import_files
from bot.config import Settings
from bot.middlewares import WRITES
from bot.texts import Texts
from db import permissions
from db.imports import LeadImporter, check_may_import
from db.permissions import Actor
from db.spreadsheets import MAX_FILE_BYTES
from db.uow import UnitOfWorkFactory
from handlers.filters import conversation_router
from keyboards.callbacks import ImportAction, ImportCB

FILE_ID = "file_id"
FILE_NAME = "file_name"


class ImportLeads(StatesGroup):
    file = State()  # waiting for the spreadsheet
    confirm = State()  # the preview is shown


class MayImport(Filter):
    """The sender may import (a manager): their documents are spreadsheets to preview."""

    async def __call__(self, message: Message, actor: Actor | None = None) -> bool:
        return actor is not None and permissions.can_create(actor)


def _buttons(texts: Texts, count: int) -> InlineKeyboardMarkup:
    builder = InlineKeyboardBuilder()
    if count:
        builder.button(text=texts.t("import.btn.run", count=count), callback_data=ImportCB(action=ImportAction.RUN))
    builder.button(text=texts.t("import.btn.cancel"), callback_data=ImportCB(action=ImportAction.CANCEL))
    builder.adjust(1)
    return builder.as_markup()


async def _download(bot: Bot, file_id: str) -> bytes:
    buffer = io.BytesIO()
    await bot.download(file_id, destination=buffer)
    return buffer.getvalue()


async def cmd_import(message: Message, actor: Actor, state: FSMContext, texts: Texts) -> None:
    check_may_import(actor)
    if message.chat.type != ChatType.PRIVATE:
        await message.answer(texts.t("import.private_only"))
        return
    await state.clear()
    await state.set_state(ImportLeads.file)
    await message.answer_document(
        BufferedInputFile(import_files.template(texts), filename=import_files.TEMPLATE_NAME),
        caption=texts.t("import.start", **import_files.limits(texts)),
    )


async def file_received(
    message: Message,
    actor: Actor,
    state: FSMContext,
    texts: Texts,
    bot: Bot,
    uow_factory: UnitOfWorkFactory,
) -> None:
    document = message.document
    assert isinstance(document, Document)
    if message.chat.type != ChatType.PRIVATE:
        return
    if document.file_size is not None and document.file_size > MAX_FILE_BYTES:
        await message.answer(texts.t("import.too_large", **import_files.limits(texts)))
        return
    name = document.file_name or "file"
    data = await _download(bot, document.file_id)
    # Raises InvalidInput for an unreadable file: the errors router says why; the state stays, so the
    # next file is taken as well.
    await state.set_state(ImportLeads.file)
    preview = await LeadImporter(uow_factory).preview(actor, data, name)
    await state.set_data({FILE_ID: document.file_id, FILE_NAME: name})
    await state.set_state(ImportLeads.confirm if preview.to_create else ImportLeads.file)
    await message.answer(
        import_files.preview_text(texts, preview, name),
        reply_markup=_buttons(texts, preview.to_create),
    )


async def file_invalid(message: Message, texts: Texts) -> None:
    await message.answer(texts.t("import.send_file"))


async def confirm_invalid(message: Message, texts: Texts) -> None:
    await message.answer(texts.t("import.confirm_hint"))


async def run(
    query: CallbackQuery,
    actor: Actor,
    state: FSMContext,
    texts: Texts,
    bot: Bot,
    settings: Settings,
    uow_factory: UnitOfWorkFactory,
) -> None:
    data = await state.get_data()
    file_id, name = data.get(FILE_ID), data.get(FILE_NAME)
    if not isinstance(file_id, str) or not isinstance(name, str):
        await state.clear()
        await query.answer(texts.t("common.stale_button"), show_alert=True)
        return
    await state.clear()  # a second press finds no file: one import per preview
    await query.answer(texts.t("import.running"))
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
    content = await _download(bot, file_id)
    result = await LeadImporter(uow_factory).run(actor, content, name, summary=import_files.summary_for(settings))
    await bot.send_document(
        query.from_user.id,
        BufferedInputFile(import_files.report(texts, result), filename=import_files.REPORT_NAME),
        caption=import_files.done_text(texts, result),
    )


async def cancel(query: CallbackQuery, state: FSMContext, texts: Texts) -> None:
    await state.clear()
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.edit_text(texts.t("import.cancelled"))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_import, Command("import"))
    steps = conversation_router(f"{__name__}.steps", ImportLeads)
    steps.message.register(file_received, StateFilter(ImportLeads.file, ImportLeads.confirm), F.document)
    steps.message.register(file_invalid, StateFilter(ImportLeads.file))
    steps.message.register(confirm_invalid, StateFilter(ImportLeads.confirm))
    steps.callback_query.register(
        run, StateFilter(ImportLeads.confirm), ImportCB.filter(F.action == ImportAction.RUN), flags=WRITES
    )
    steps.callback_query.register(cancel, ImportCB.filter(F.action == ImportAction.CANCEL))
    router.include_router(steps)
    # A manager may also just send a spreadsheet, outside any conversation.
    router.message.register(file_received, StateFilter(None), F.document, MayImport())
    return router
