"""The order of the routers: /cancel, the cancel words and /help win over every conversation step.

The busiest routers come before ``common`` (handlers/__init__.py), so these hold only because the
conversation steps never take a command or a cancel word (``handlers.filters.ConversationInput``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiogram import Router
from aiogram.filters.callback_data import CallbackQueryFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import StorageKey
from sqlalchemy import func, select

from db.enums import StatusCode
from db.models import Comment, Lead
from handlers import get_routers
from handlers.filters import CallbackPrefix
from keyboards.callbacks import EditField, LeadAction, LeadCB, LeadEditCB, LeadListAction, LeadListCB, LeadStatusCB
from tests.conftest import Harness, Member, Team
from tests.test_lead_card import make_lead

Enter = Callable[[Harness, Member, int], Awaitable[None]]


async def _new(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.send(who, "/new")


async def _comment(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.click(who, LeadCB(action=LeadAction.COMMENT, lead_id=lead_id))


async def _refusal(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.click(who, LeadStatusCB(lead_id=lead_id, code=StatusCode.REFUSED))


async def _edit(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.click(who, LeadEditCB(lead_id=lead_id, field=EditField.CLIENT_NAME))


async def _find(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.send(who, "/find")


async def _followup(harness: Harness, who: Member, lead_id: int) -> None:
    await harness.click(who, LeadCB(action=LeadAction.FOLLOWUP, lead_id=lead_id))


CONVERSATIONS: dict[str, Enter] = {
    "new": _new,
    "comment": _comment,
    "refusal": _refusal,
    "edit": _edit,
    "find": _find,
    "followup": _followup,
}


def _state(harness: Harness, who: Member) -> FSMContext:
    key = StorageKey(bot_id=harness.bot.id, chat_id=who.chat_id, user_id=who.tg.id)
    return FSMContext(storage=harness.dp.storage, key=key)


async def _entered(harness: Harness, team: Team, enter: Enter) -> tuple[FSMContext, int]:
    lead_id = await make_lead(harness, team, assigned=team.seller, name="Клиент Маршрутов")
    await enter(harness, team.mop, lead_id)
    state = _state(harness, team.mop)
    assert await state.get_state() is not None, "the conversation did not start"
    return state, lead_id


async def _unchanged(harness: Harness, lead_id: int) -> None:
    async with harness.uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        comments = await uow.session.scalar(select(func.count()).select_from(Comment))
    assert lead is not None and lead.client_name == "Клиент Маршрутов" and lead.status == "новый"
    assert comments == 0


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("cancel", ["/cancel", "Отмена", "  cancel "])
async def test_cancel_leaves_every_conversation(harness: Harness, team: Team, conversation: str, cancel: str) -> None:
    state, lead_id = await _entered(harness, team, CONVERSATIONS[conversation])
    await harness.send(team.mop, cancel)
    assert harness.last_text(team.mop.chat_id) == "Отменено."
    assert await state.get_state() is None
    await _unchanged(harness, lead_id)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
async def test_help_mid_conversation_keeps_it(harness: Harness, team: Team, conversation: str) -> None:
    state, lead_id = await _entered(harness, team, CONVERSATIONS[conversation])
    before = await state.get_state()
    await harness.send(team.mop, "/help")
    assert harness.last_text(team.mop.chat_id).startswith("Команды:")
    assert await state.get_state() == before
    await _unchanged(harness, lead_id)


def test_error_handlers_are_found_wherever_the_errors_router_stands() -> None:
    routers = get_routers()
    with_error_handlers = [router.name for router in routers if router.errors.handlers]
    assert with_error_handlers == ["handlers.errors"]
    # Only the errors router has error handlers, so putting it last changes no answer.
    assert routers[-1].name == "handlers.errors"


def _walk(router: Router) -> list[Router]:
    return [router, *(each for sub in router.sub_routers for each in _walk(sub))]


def test_every_button_handler_is_let_into_its_router() -> None:
    prefixed = 0
    for router in get_routers():
        roots = [f.callback for f in router.callback_query._handler.filters or ()]
        gates = [f for f in roots if isinstance(f, CallbackPrefix)]
        handlers = [h for each in _walk(router) for h in each.callback_query.handlers]
        if not gates:
            # Only a router with a catch-all handler is left open.
            assert not handlers or any(
                not any(isinstance(f.callback, CallbackQueryFilter) for f in h.filters or ()) for h in handlers
            ), router.name
            continue
        prefixed += 1
        for handler in handlers:
            for f in handler.filters or ():
                if isinstance(f.callback, CallbackQueryFilter):
                    assert f.callback.callback_data.__prefix__ in gates[0].prefixes, (router.name, handler.callback)
    assert prefixed >= 8


async def test_a_press_for_another_router_never_reaches_the_card_handlers(
    harness: Harness, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    unpacked: list[str] = []
    original = LeadCB.unpack.__func__  # type: ignore[attr-defined]

    def counting(cls: type[LeadCB], value: str) -> LeadCB:
        unpacked.append(value)
        return original(cls, value)  # type: ignore[no-any-return]

    monkeypatch.setattr(LeadCB, "unpack", classmethod(counting))
    # The card router comes first; its gate turns the list's button away without unpacking it.
    await harness.click(team.mop, LeadListCB(action=LeadListAction.SHOW, page=1))
    assert unpacked == []
    assert harness.alerts() == []
    assert harness.last_text(team.mop.chat_id).startswith("<b>")
    # While the card's own buttons are unpacked as before.
    lead_id = await make_lead(harness, team, assigned=team.seller)
    await harness.click(team.mop, LeadCB(action=LeadAction.OPEN, lead_id=lead_id))
    assert unpacked and f"#{lead_id}" in harness.last_text(team.mop.chat_id)
