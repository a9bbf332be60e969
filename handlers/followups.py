"""Follow-ups: set one from the lead card (due time, then a short text), /tasks, Done and Snooze.

Snooze also serves the "lead waits in «новый»" reminders (db/reminders.py), whose messages carry it.
"""

from __future__ import annotations

from datetime import datetime

from aiogram import Bot, F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from pydantic import BaseModel

from bot.config import Settings
from bot.middlewares import WRITES
from bot.presentation.views import CALLBACK_ANSWER_LIMIT, cut, esc, format_dt
from bot.texts import Texts
from db.errors import InvalidInput
from db.models import utcnow
from db.permissions import Actor
from db.reminders import due_examples, parse_due, preset_due, presets_ahead, snooze_until
from db.repositories.followups import MAX_FOLLOWUP_TEXT
from db.uow import UnitOfWork
from handlers.filters import HasText, conversation_router
from keyboards.callbacks import (
    FollowUpAction,
    FollowUpCB,
    FollowUpDueCB,
    LeadAction,
    LeadCB,
    MenuAction,
    MenuCB,
    SnoozeCB,
    SnoozeTarget,
)
from keyboards.followups import due_keyboard, open_lead_keyboard, tasks_keyboard

TASKS_SHOWN = 10


class FollowUpForm(StatesGroup):
    due = State()
    text = State()


class FollowUpDraft(BaseModel):
    lead_id: int
    due_at: datetime | None = None


async def _draft(state: FSMContext) -> FollowUpDraft:
    data = await state.get_data()
    return FollowUpDraft.model_validate(data.get("draft") or {})


async def _save(state: FSMContext, draft: FollowUpDraft) -> None:
    await state.update_data(draft=draft.model_dump(mode="json"))


async def _say(query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await bot.send_message(chat_id, text, reply_markup=markup)


# ---- setting a follow-up ------------------------------------------------------------------------------


async def on_followup_start(
    query: CallbackQuery,
    callback_data: LeadCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    state: FSMContext,
    bot: Bot,
) -> None:
    lead = await uow.followups.lead_for_followup(actor, callback_data.lead_id)
    now = utcnow()
    await state.set_state(FollowUpForm.due)
    await _save(state, FollowUpDraft(lead_id=lead.id))
    await query.answer()
    await _say(
        query,
        bot,
        texts.t(
            "followups.ask_due",
            lead_id=lead.id,
            client=esc(lead.client_name),
            example=due_examples(now, settings.crm.tz)["example"],
        ),
        due_keyboard(texts, presets_ahead(now, settings.crm.tz)),
    )


async def _ask_text(texts: Texts, settings: Settings, state: FSMContext, due_at: datetime) -> str:
    draft = await _draft(state)
    draft.due_at = due_at
    await _save(state, draft)
    await state.set_state(FollowUpForm.text)
    return texts.t("followups.ask_text", due=format_dt(due_at, settings.crm.tz), limit=MAX_FOLLOWUP_TEXT)


async def on_due_preset(
    query: CallbackQuery,
    callback_data: FollowUpDueCB,
    texts: Texts,
    settings: Settings,
    state: FSMContext,
    bot: Bot,
) -> None:
    now = utcnow()
    due_at = preset_due(callback_data.preset, now, settings.crm.tz)
    if due_at <= now:  # "today 18:00" pressed on a keyboard shown before six
        raise InvalidInput("due_at", "due_past", "the due time is in the past")
    await query.answer()
    await _say(query, bot, await _ask_text(texts, settings, state, due_at))


async def on_due_typed(message: Message, texts: Texts, settings: Settings, state: FSMContext) -> None:
    # A bad date raises InvalidInput: the errors router shows the example, the state stays.
    due_at = parse_due(message.text or "", utcnow(), settings.crm.tz)
    await message.answer(await _ask_text(texts, settings, state, due_at))


async def on_due_invalid(message: Message, texts: Texts, settings: Settings) -> None:
    await message.answer(texts.t("followups.need_due", example=due_examples(utcnow(), settings.crm.tz)["example"]))


async def on_text(
    message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, state: FSMContext
) -> None:
    draft = await _draft(state)
    assert draft.due_at is not None
    # The repository checks the permission again (the lead may have changed hands meanwhile).
    item = await uow.followups.create(actor, draft.lead_id, draft.due_at, message.text or "")
    await state.clear()
    await message.answer(
        texts.t(
            "followups.created",
            lead_id=item.lead.id,
            client=esc(item.lead.client_name),
            due=format_dt(item.followup.due_at, settings.crm.tz),
            text=esc(item.followup.text),
        ),
        reply_markup=open_lead_keyboard(texts, item.lead.id),
    )


async def on_text_invalid(message: Message, texts: Texts) -> None:
    await message.answer(texts.t("followups.need_text"))


# ---- /tasks ----------------------------------------------------------------------------------------------


async def render_tasks(
    actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings
) -> tuple[str, InlineKeyboardMarkup | None]:
    items, total = await uow.followups.open_for(actor, limit=TASKS_SHOWN)
    if not items:
        return texts.t("tasks.empty"), None
    now = utcnow()
    tz = settings.crm.tz
    lines = [texts.t("tasks.header", total=total)]
    for number, item in enumerate(items, start=1):
        lines.append(
            texts.t(
                "tasks.item",
                n=number,
                mark=texts.t("tasks.overdue_mark") if item.followup.due_at <= now else "",
                due=format_dt(item.followup.due_at, tz),
                lead_id=item.lead.id,
                client=esc(item.lead.client_name),
                text=esc(item.followup.text),
            )
        )
    if total > len(items):
        lines.append(texts.t("tasks.more", count=total - len(items)))
    return cut("\n".join(lines)), tasks_keyboard(texts, [item.followup.id for item in items])


async def cmd_tasks(message: Message, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings) -> None:
    text, markup = await render_tasks(actor, uow, texts, settings)
    await message.answer(text, reply_markup=markup)


async def on_menu_tasks(
    query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, bot: Bot
) -> None:
    text, markup = await render_tasks(actor, uow, texts, settings)
    await query.answer()
    await _say(query, bot, text, markup)


async def _redraw_tasks(
    query: CallbackQuery, actor: Actor, uow: UnitOfWork, texts: Texts, settings: Settings, bot: Bot
) -> None:
    if query.message is None:
        return
    text, markup = await render_tasks(actor, uow, texts, settings)
    await bot.edit_message_text(
        text, chat_id=query.message.chat.id, message_id=query.message.message_id, reply_markup=markup
    )


# ---- Done and Snooze -----------------------------------------------------------------------------------


async def on_done(
    query: CallbackQuery,
    callback_data: FollowUpCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    _, newly_done = await uow.followups.complete(actor, callback_data.followup_id)
    await query.answer(texts.t("followups.done" if newly_done else "followups.already_done"))
    if callback_data.in_list:
        await _redraw_tasks(query, actor, uow, texts, settings, bot)


async def on_snooze(
    query: CallbackQuery,
    callback_data: SnoozeCB,
    actor: Actor,
    uow: UnitOfWork,
    texts: Texts,
    settings: Settings,
    bot: Bot,
) -> None:
    tz = settings.crm.tz
    until = snooze_until(callback_data.until, utcnow(), tz)
    if callback_data.target is SnoozeTarget.LEAD:
        await uow.reminders.snooze_lead(actor, callback_data.target_id, until)
        answer = texts.t("reminders.snoozed", when=format_dt(until, tz))
    else:
        await uow.followups.snooze(actor, callback_data.target_id, until)
        answer = texts.t("followups.snoozed", when=format_dt(until, tz))
    await query.answer(answer[:CALLBACK_ANSWER_LIMIT])
    if callback_data.in_list:
        await _redraw_tasks(query, actor, uow, texts, settings, bot)


def create_router() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(on_followup_start, LeadCB.filter(F.action == LeadAction.FOLLOWUP))
    router.callback_query.register(on_due_preset, FollowUpDueCB.filter(), StateFilter(FollowUpForm.due))
    router.message.register(cmd_tasks, Command("tasks"))
    router.callback_query.register(on_menu_tasks, MenuCB.filter(F.action == MenuAction.TASKS))
    router.callback_query.register(on_done, FollowUpCB.filter(F.action == FollowUpAction.DONE), flags=WRITES)
    router.callback_query.register(on_snooze, SnoozeCB.filter(), flags=WRITES)

    form = conversation_router(f"{__name__}.form", FollowUpForm)
    form.message.register(on_due_typed, StateFilter(FollowUpForm.due), HasText())
    form.message.register(on_due_invalid, StateFilter(FollowUpForm.due))
    form.message.register(on_text, StateFilter(FollowUpForm.text), HasText(), flags=WRITES)
    form.message.register(on_text_invalid, StateFilter(FollowUpForm.text))
    router.include_router(form)
    return router
