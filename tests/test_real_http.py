"""The production bot over real HTTP, against the fake Bot API server on 127.0.0.1.

The other tests feed updates straight into the dispatcher; these run the whole path instead — the real
``AiohttpSession`` built by ``bot.factory.create_bot`` from ``settings.bot.api_server``, long polling,
the JSON both ways — and check the fake server itself (faults, flood limits), since other tests rely on it.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods.base import Response
from aiogram.types import BotShortDescription, Message

from bot.config import Settings
from bot.factory import create_bot, create_dispatcher
from db.engine import Database
from tests.conftest import ADMIN_TG
from tests.fake_bot_api import FakeBotAPI

LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def only_localhost(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail any socket connection that would leave the machine."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        attempts.append(address)
        if isinstance(address, tuple) and address[0] not in LOCAL_HOSTS:
            raise AssertionError(f"a test tried to connect to {address}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts


def pointed_at(settings: Settings, server: FakeBotAPI) -> Settings:
    return settings.model_copy(update={"bot": settings.bot.model_copy(update={"api_server": server.base_url})})


@pytest.fixture
async def live_bot(settings: Settings, fake_bot_api: FakeBotAPI) -> AsyncIterator[Bot]:
    """The production bot, its session talking HTTP to the fake server."""
    bot = create_bot(pointed_at(settings, fake_bot_api))
    yield bot
    await bot.session.close()


async def test_start_is_answered_over_real_http(
    settings: Settings,
    database: Database,
    fake_bot_api: FakeBotAPI,
    only_localhost: list[Any],
) -> None:
    live = pointed_at(settings, fake_bot_api)
    bot = create_bot(live)
    dispatcher = create_dispatcher(live, database)
    polling = asyncio.create_task(dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        fake_bot_api.push_message(ADMIN_TG, "/start", first_name="Boss")
        greeting = await fake_bot_api.wait_for(
            "sendMessage", chat_id=ADMIN_TG, predicate=lambda r: "Boss" in r.text, timeout=10
        )
        # The second update proves the offset moved on: /start is not delivered (and answered) again.
        fake_bot_api.push_message(ADMIN_TG, "/help", first_name="Boss")
        await fake_bot_api.wait_for("sendMessage", chat_id=ADMIN_TG, predicate=lambda r: "/new" in r.text)
    finally:
        await dispatcher.stop_polling()
        await asyncio.wait_for(polling, 10)

    assert "администратор" in greeting.text
    assert greeting.params["parse_mode"] == "HTML"
    menu = greeting.params["reply_markup"]["inline_keyboard"]
    assert any(button["callback_data"].startswith("mn:") for row in menu for button in row)
    commands = fake_bot_api.calls("setMyCommands", ok=True)
    assert commands and commands[-1].params["scope"] == {"type": "chat", "chat_id": ADMIN_TG}
    assert len([r for r in fake_bot_api.sent(ADMIN_TG) if "Boss" in r.text]) == 1
    assert fake_bot_api.pending_updates <= 1  # only the last update may still await its confirmation
    async with dispatcher["uow_factory"]() as uow:
        admin = await uow.users.by_telegram_id(ADMIN_TG)
        assert admin is not None and admin.role == "admin" and admin.first_name == "Boss"
    assert only_localhost, "the bot must have connected to the fake server"


async def test_send_message_is_answered_with_a_message(live_bot: Bot, fake_bot_api: FakeBotAPI) -> None:
    first = await live_bot.send_message(5, "<b>one</b>")
    second = await live_bot.send_message(-100, "two", message_thread_id=7)
    assert second.message_id != first.message_id
    assert (first.chat.id, first.chat.type, first.text) == (5, "private", "<b>one</b>")
    assert (second.chat.type, second.message_thread_id) == ("supergroup", 7)
    edited = await live_bot.edit_message_text("changed", chat_id=5, message_id=first.message_id)
    assert not isinstance(edited, bool) and edited.message_id == first.message_id
    assert [(r.method, r.chat_id) for r in fake_bot_api.requests] == [
        ("sendMessage", 5),
        ("sendMessage", -100),
        ("editMessageText", 5),
    ]


async def test_the_answer_model_of_a_method_called_outlives_the_garbage_collector(
    live_bot: Bot, fake_bot_api: FakeBotAPI
) -> None:
    """aiogram reads an answer with ``Response[<result type>]``, a class pydantic caches only weakly; the
    production bot keeps the ones it has used (``KeepResponseModels``), so the collector does not free
    them and the next answer does not pay milliseconds to build the class again."""
    await live_bot.send_message(5, "one")
    gc.collect()
    model = weakref.ref(Response[Message])  # the class aiogram read the answer with: a cache hit
    gc.collect()
    assert model() is not None
    # The premise, on a method this bot never called: held by nothing, the class is freed by a collection.
    unheld = weakref.ref(Response[BotShortDescription])
    gc.collect()
    assert unheld() is None


async def test_injected_errors_reach_the_client_as_telegram_errors(live_bot: Bot, fake_bot_api: FakeBotAPI) -> None:
    fake_bot_api.fail_next("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    fake_bot_api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    fake_bot_api.fail_next("sendMessage", 500, "Internal Server Error")
    with pytest.raises(TelegramRetryAfter) as too_many:
        await live_bot.send_message(5, "a")
    assert too_many.value.retry_after == 7
    with pytest.raises(TelegramForbiddenError):
        await live_bot.send_message(5, "b")
    with pytest.raises(TelegramServerError):
        await live_bot.send_message(5, "c")
    await live_bot.send_message(5, "d")  # faults are used up one per call
    assert [r.status for r in fake_bot_api.calls("sendMessage")] == [429, 403, 500, 200]
    assert fake_bot_api.too_many_requests == 1 and fake_bot_api.limit_hits == 0
    assert [r.text for r in fake_bot_api.sent(5)] == ["d"]


async def test_dropped_and_delayed_answers_are_network_errors(live_bot: Bot, fake_bot_api: FakeBotAPI) -> None:
    fake_bot_api.drop_next("sendMessage")
    with pytest.raises(TelegramNetworkError):
        await live_bot.send_message(5, "dropped")
    fake_bot_api.delay_next("sendMessage", 30)
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await live_bot.send_message(5, "late", request_timeout=1)
    assert (await live_bot.send_message(5, "fine")).text == "fine"
    assert [r.status for r in fake_bot_api.calls("sendMessage")] == [None, 200, 200]


async def test_wrong_token_is_unauthorized(settings: Settings, fake_bot_api: FakeBotAPI) -> None:
    bot = create_bot(pointed_at(settings, fake_bot_api), token="43:OTHER")
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await bot.get_me()
    finally:
        await bot.session.close()


async def test_get_updates_waits_for_an_update_and_honours_the_offset(live_bot: Bot, fake_bot_api: FakeBotAPI) -> None:
    waiting = asyncio.create_task(live_bot.get_updates(timeout=10))
    await fake_bot_api.wait_for("getUpdates")
    assert not waiting.done()
    pushed = fake_bot_api.push_message(7, "hello")
    updates = await asyncio.wait_for(waiting, 5)
    assert [u.update_id for u in updates] == [pushed["update_id"]]
    assert updates[0].message is not None and updates[0].message.text == "hello"
    fake_bot_api.push_message(7, "again")
    again = await live_bot.get_updates(offset=pushed["update_id"] + 1, timeout=0)
    assert [u.message.text for u in again if u.message] == ["again"]
    assert fake_bot_api.pending_updates == 1


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_flood_limits_per_chat_per_group_and_in_total(settings: Settings) -> None:
    clock = ManualClock()
    server = FakeBotAPI(
        enforce_limits=True, clock=clock, global_per_second=3, per_chat_per_second=1, group_per_minute=2
    )
    await server.start()
    bot = create_bot(pointed_at(settings, server))
    try:
        await bot.send_message(1, "a")
        with pytest.raises(TelegramRetryAfter) as same_chat:
            await bot.send_message(1, "b")
        assert same_chat.value.retry_after == 1
        await bot.send_message(2, "c")
        await bot.send_message(3, "d")
        with pytest.raises(TelegramRetryAfter):  # four chats in one second: over the total
            await bot.send_message(4, "e")

        clock.now += 1.5
        await bot.send_message(1, "b again")
        await bot.send_message(-100, "group 1")
        clock.now += 1.5
        await bot.send_message(-100, "group 2")
        clock.now += 1.5
        with pytest.raises(TelegramRetryAfter) as group:  # a third group message within the minute
            await bot.send_message(-100, "group 3")
        assert 50 <= group.value.retry_after <= 60
        clock.now += 60
        await bot.send_message(-100, "group 3 later")
    finally:
        await bot.session.close()
        await server.stop()
    assert server.limit_hits == 3 == server.too_many_requests
    assert [r.text for r in server.sent()] == ["a", "c", "d", "b again", "group 1", "group 2", "group 3 later"]


async def test_limits_are_off_unless_asked(live_bot: Bot, fake_bot_api: FakeBotAPI) -> None:
    for n in range(5):
        await live_bot.send_message(1, str(n))
    assert fake_bot_api.limit_hits == 0 and len(fake_bot_api.sent(1)) == 5


async def test_the_suite_runs_on_the_loop_the_bot_serves_on() -> None:
    """``leadbot run`` and ``leadbot api`` serve on uvloop (``bot.cli.run_serving``); so does every async
    test here (``tests/conftest.py``), so what is tested is what runs."""
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
