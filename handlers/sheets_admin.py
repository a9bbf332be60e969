"""/sheets (admins): the Google Sheets export's state and last error; ``/sheets resync`` rewrites the sheet."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.config import Settings
from bot.presentation.views import cut, esc, format_dt
from bot.sheets import SheetsExporter
from bot.texts import Texts
from db import permissions
from db.permissions import Actor

ERROR_PREVIEW = 300


def render(texts: Texts, exporter: SheetsExporter, settings: Settings) -> str:
    state = exporter.sync.state
    tz = settings.crm.tz
    cursor = state.cursor
    lines = [
        texts.t("sheets.title", spreadsheet=esc(exporter.config.spreadsheet_id), sheet=esc(exporter.config.sheet)),
        texts.t("sheets.running" if exporter.running else "sheets.stopped"),
    ]
    if exporter.running and state.writer is False:
        lines.append(texts.t("sheets.other_writer"))
    lines += [
        texts.t(
            "sheets.progress",
            rows=state.rows_written,
            last_write=format_dt(state.last_write_at, tz),
            cursor=format_dt(cursor[0], tz) if cursor is not None and cursor[1] else texts.t("common.none"),
        ),
    ]
    if state.last_error:
        lines.append(
            texts.t(
                "sheets.error",
                at=format_dt(state.last_error_at, tz),
                failures=state.failures,
                error=cut(esc(state.last_error), ERROR_PREVIEW),
            )
        )
    else:
        lines.append(texts.t("sheets.no_error"))
    lines.append(texts.t("sheets.hint"))
    return "\n".join(lines)


async def cmd_sheets(
    message: Message,
    command: CommandObject,
    actor: Actor,
    texts: Texts,
    settings: Settings,
    sheets: SheetsExporter | None,
) -> None:
    if not permissions.can_manage_sheets(actor):
        await message.answer(texts.t("sheets.forbidden"))
        return
    if sheets is None:
        await message.answer(texts.t("sheets.not_configured"))
        return
    if (command.args or "").strip().lower() == "resync":
        await sheets.sync.request_resync()
        await message.answer(texts.t("sheets.resync"))
        return
    await message.answer(render(texts, sheets, settings))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(cmd_sheets, Command("sheets"))
    return router
