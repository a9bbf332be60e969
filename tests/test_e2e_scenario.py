"""The core issue's "done when", end to end: the bot as `leadbot run` starts it (migrations, polling,
the delivery worker, the scheduler), long-polling a fake Bot API server on 127.0.0.1 over real HTTP.

An admin invites a ROP, a MOP, two salespeople and a financier; a lead goes create → assign →
в работе → comment → закрыт; the card, the lists and the history are right for every role, and
every forbidden action is refused.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiogram import Dispatcher
from sqlalchemy import select

from bot.config import Settings
from bot.runner import run_bot
from db.enums import LeadStatus, Role, StatusCode
from db.models import Lead, LeadHistory, User
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import LeadAction, LeadCB, LeadStatusCB
from tests.conftest import ADMIN_TG
from tests.fake_bot_api import FakeBotAPI, Recorded

ROP, MOP, SELLER_A, SELLER_B, FINANCE = 2001, 2002, 2003, 2004, 2005


@dataclass
class Chat:
    """One person talking to the running bot through the fake server."""

    api: FakeBotAPI
    user_id: int
    name: str

    async def say(self, text: str, *, expect: str | None = None) -> Recorded:
        mark = len(self.api.requests)
        self.api.push_message(self.user_id, text, first_name=self.name)
        return await self._reply(mark, expect)

    async def press(self, caption: str, *, expect: str | None = None) -> Recorded:
        """Press the button whose caption contains ``caption`` on the newest message that has it."""
        for request in reversed(self.api.requests):
            if request.chat_id != self.user_id or request.method not in ("sendMessage", "editMessageText"):
                continue
            for text, data in request.buttons:
                if caption.casefold() in text.casefold():
                    return await self.click(data, message_id=int(request.params.get("message_id") or 1), expect=expect)
        raise AssertionError(f"{self.name}: no button {caption!r}")

    async def click(self, data: str, *, message_id: int = 1, expect: str | None = None) -> Recorded:
        mark = len(self.api.requests)
        self.api.push_callback(self.user_id, data, message_id=message_id, first_name=self.name)
        return await self._reply(mark, expect, callback=True)

    async def _reply(self, mark: int, expect: str | None, *, callback: bool = False) -> Recorded:
        methods = ("sendMessage", "editMessageText", "answerCallbackQuery") if callback else ("sendMessage",)

        def matches(request: Recorded) -> bool:
            if request.method not in methods:
                return False
            if request.method == "answerCallbackQuery":
                # A silent answer only acknowledges the press; wait for what the bot says.
                return expect is not None and expect.casefold() in request.text.casefold()
            if request.chat_id != self.user_id:
                return False
            return expect is None or expect.casefold() in request.text.casefold()

        deadline = asyncio.get_running_loop().time() + 15
        while asyncio.get_running_loop().time() < deadline:
            for request in self.api.requests[mark:]:
                if matches(request):
                    return request
            await asyncio.sleep(0.02)
        seen = [(r.method, r.chat_id, r.text[:80]) for r in self.api.requests[mark:]]
        raise AssertionError(f"{self.name}: no reply {expect!r}; saw {seen}")


@pytest.fixture
async def running(settings: Settings, fake_bot_api: FakeBotAPI) -> AsyncIterator[Settings]:
    live = settings.model_copy(
        update={
            "bot": settings.bot.model_copy(update={"api_server": fake_bot_api.base_url}),
            "notifications": settings.notifications.model_copy(update={"poll_interval": timedelta(milliseconds=50)}),
        }
    )
    started: asyncio.Future[Dispatcher] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bot(live, handle_signals=False, started=started))
    done, _ = await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # the bot died while starting: show why
    dispatcher = started.result()
    yield live
    await asyncio.wait_for(dispatcher.stop_polling(), timeout=30)
    await asyncio.wait_for(task, timeout=30)


async def _invite(admin: Chat, role: str, newcomer: Chat) -> None:
    reply = await admin.say(f"/invite {role}", expect="t.me/")
    code = re.search(r"\?start=([\w-]+)", reply.text)
    assert code, reply.text
    await newcomer.say(f"/start {code.group(1)}")


async def test_a_team_carries_a_lead_from_creation_to_a_closed_deal(
    running: Settings, fake_bot_api: FakeBotAPI, uow_factory: UnitOfWorkFactory
) -> None:
    api = fake_bot_api
    admin = Chat(api, ADMIN_TG, "Админ")
    rop, mop = Chat(api, ROP, "Роп"), Chat(api, MOP, "Моп")
    seller_a, seller_b = Chat(api, SELLER_A, "Анвар"), Chat(api, SELLER_B, "Бахтиёр")
    finance = Chat(api, FINANCE, "Фарида")

    # --- the admin builds the team ---
    assert "администратор" in (await admin.say("/start")).text
    for role, chat in (("rop", rop), ("mop", mop), ("seller", seller_a), ("seller", seller_b), ("finance", finance)):
        await _invite(admin, role, chat)
    async with uow_factory() as uow:
        roles = {u.telegram_id: u.role for u in (await uow.session.scalars(select(User))).all()}
    assert roles == {
        ADMIN_TG: Role.ADMIN,
        ROP: Role.ROP,
        MOP: Role.MOP,
        SELLER_A: Role.SELLER,
        SELLER_B: Role.SELLER,
        FINANCE: Role.FINANCE,
    }

    # --- a salesperson may not create; the MOP creates the lead ---
    assert "Создавать лиды могут" in (await seller_a.say("/new")).text
    await mop.say("/new", expect="Как зовут клиента")
    await mop.say("Иван <b>Петров</b>", expect="Телефон клиента")
    assert "Неверный номер" in (await mop.say("abc")).text
    await mop.say("+998 90 123-45-67", expect="Откуда пришёл клиент")
    await mop.press("Instagram", expect="Бюджет")
    await mop.say("50k", expect="Заметки")
    await mop.say("Интересуется 2-комнатной квартирой", expect="Кому из продажников")
    summary = await mop.press("Пропустить", expect="Проверьте новый лид")
    assert "Иван &lt;b&gt;Петров&lt;/b&gt;" in summary.text
    created = await mop.press("Создать", expect="создан")
    lead_id = int(re.search(r"#(\d+)", created.text).group(1))  # type: ignore[union-attr]

    # --- the ROP assigns it to salesperson A; A is told ---
    await rop.say(f"/assign {lead_id}", expect="Кому назначить")
    await rop.press("Анвар")
    notice = await api.wait_for(
        "sendMessage", chat_id=SELLER_A, predicate=lambda r: str(lead_id) in r.text or "Иван" in r.text, timeout=15
    )
    assert "Иван" in notice.text

    # --- salesperson B can neither see nor change it ---
    assert "другому продажнику" in (await seller_b.say(f"/lead {lead_id}")).text
    forged = LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK).pack()
    await seller_b.click(forged, expect="другому продажнику")

    # --- A takes it into work, comments, closes ---
    card = await seller_a.say(f"/lead {lead_id}", expect=f"Лид #{lead_id}")
    assert {"🔄 Статус", "💬 Комментарий"} <= {text for text, _ in card.buttons}
    assert not any("Удалить" in text or "Назначить" in text for text, _ in card.buttons)
    await seller_a.press("Статус", expect="Выберите новый статус")
    await seller_a.press("в работе")
    await seller_a.say(f"/lead {lead_id}", expect="в работе")
    await seller_a.press("Комментарий")
    await seller_a.say("Позвонил клиенту, договорились на встречу", expect="Позвонил клиенту")
    await seller_a.say(f"/lead {lead_id}", expect=f"Лид #{lead_id}")
    await seller_a.press("Статус", expect="Выберите новый статус")
    await seller_a.press("закрыт")

    # --- the MOP and ROP hear about the status change ---
    await api.wait_for("sendMessage", chat_id=MOP, predicate=lambda r: "закрыт" in r.text, timeout=15)
    await api.wait_for("sendMessage", chat_id=ROP, predicate=lambda r: "закрыт" in r.text, timeout=15)

    # --- every role's view ---
    fin_card = await finance.say(f"/lead {lead_id}", expect=f"Лид #{lead_id}")
    assert "закрыт" in fin_card.text and "Позвонил клиенту" in fin_card.text
    assert not [
        text
        for text, _ in fin_card.buttons
        if any(word in text for word in ("Статус", "Комментарий", "Назначить", "Изменить", "Удалить"))
    ]
    await finance.click(
        LeadCB(action=LeadAction.COMMENT, lead_id=lead_id).pack(), expect="Комментировать этот лид вы не можете"
    )
    await mop.click(
        LeadCB(action=LeadAction.DELETE_CONFIRM, lead_id=lead_id).pack(), expect="Удалять лиды могут только"
    )
    await seller_a.click(
        LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK).pack(), expect="Открыть закрытый лид заново могут только"
    )
    assert f"#{lead_id}" in (await seller_a.say("/leads")).text
    assert f"#{lead_id}" not in (await seller_b.say("/leads")).text
    assert f"#{lead_id}" in (await finance.say("/leads")).text
    assert f"#{lead_id}" in (await rop.say("/find Иван")).text

    # --- the record ---
    async with uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        history = (
            await uow.session.scalars(
                select(LeadHistory).where(LeadHistory.lead_id == lead_id).order_by(LeadHistory.id)
            )
        ).all()
    assert lead is not None and lead.status == LeadStatus.CLOSED and lead.closing_date is not None
    assert lead.phone_number == "+998901234567" and lead.budget == 50000
    steps: list[tuple[Any, ...]] = [(h.action, h.old_value, h.new_value) for h in history]
    assert steps == [
        ("created", None, "новый"),
        ("assigned", None, "Анвар"),
        ("status_changed", "новый", "в работе"),
        ("status_changed", "в работе", "закрыт"),
    ]
