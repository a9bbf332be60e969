"""Issue 10: webhook mode. ``leadbot run`` with ``[bot] webhook_url`` sets the webhook at start and takes
Telegram's posts on ``[bot] listen``, checking the secret Telegram sends with each; the fake Bot API on
127.0.0.1 stands in for Telegram."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiogram import Dispatcher
from pydantic import ValidationError

from bot.config import Settings
from bot.runner import run_bot
from tests.conftest import ADMIN_TG
from tests.fake_bot_api import FakeBotAPI

SECRET = "webhook-secret-of-the-test-0123"
PATH = "/telegram/5f2c"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["own server", "the API's server"])
async def webhook_bot(
    request: pytest.FixtureRequest, settings: Settings, fake_bot_api: FakeBotAPI
) -> AsyncIterator[tuple[str, Dispatcher]]:
    port = _free_port()
    bot = {
        "token": "42:TEST-TOKEN",
        "api_server": fake_bot_api.base_url,
        "webhook_url": f"https://bot.example.test{PATH}",
        "webhook_secret": SECRET,
        "listen": f"127.0.0.1:{port}",
    }
    values: dict[str, Any] = {
        "bot": bot,
        "database": {"url": settings.database.url},
        "access": {"admins": settings.access.admins},
    }
    if request.param == "the API's server":  # [bot] listen is the API's address: one port serves both
        values["api"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    live = Settings.model_validate(values)
    started: asyncio.Future[Dispatcher] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(run_bot(live, handle_signals=False, started=started, stop=stop))
    dispatcher = await asyncio.wait_for(started, 30)
    try:
        yield f"http://127.0.0.1:{port}{PATH}", dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _start_update(fake: FakeBotAPI) -> dict[str, Any]:
    return fake.push_message(ADMIN_TG, "/start", first_name="Boss")


async def test_the_api_answers_beside_the_webhook_on_one_port(webhook_bot: tuple[str, Dispatcher]) -> None:
    url, dispatcher = webhook_bot
    port = int(url.split(":")[2].split("/")[0])
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/api/health")
    shared = dispatcher["settings"].api.enabled
    assert (health.status_code == 200) is shared  # the bot's own server serves only the webhook


async def test_the_webhook_is_set_at_start_with_its_secret(
    webhook_bot: tuple[str, Dispatcher], fake_bot_api: FakeBotAPI
) -> None:
    [call] = fake_bot_api.calls("setWebhook", ok=True)
    assert call.params["url"] == f"https://bot.example.test{PATH}"
    assert call.params["secret_token"] == SECRET
    assert "message" in call.params["allowed_updates"] and "callback_query" in call.params["allowed_updates"]


async def test_an_update_with_the_secret_is_handled(
    webhook_bot: tuple[str, Dispatcher], fake_bot_api: FakeBotAPI
) -> None:
    url, _ = webhook_bot
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url, json=_start_update(fake_bot_api), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
    assert response.status_code == 200
    greeting = await fake_bot_api.wait_for("sendMessage", chat_id=ADMIN_TG, predicate=lambda r: "Boss" in r.text)
    assert "администратор" in greeting.text


@pytest.mark.parametrize("headers", [{}, {"X-Telegram-Bot-Api-Secret-Token": "not-the-secret-at-all"}])
async def test_a_post_without_the_secret_is_refused_and_changes_nothing(
    webhook_bot: tuple[str, Dispatcher], fake_bot_api: FakeBotAPI, headers: dict[str, str]
) -> None:
    url, dispatcher = webhook_bot
    async with httpx.AsyncClient() as client:
        response = await client.post(url, json=_start_update(fake_bot_api), headers=headers)
    assert response.status_code == 401
    await asyncio.sleep(0.2)  # what a handled update would have sent by now, had it been handled
    assert fake_bot_api.sent(ADMIN_TG) == []
    async with dispatcher["uow_factory"](read_only=True) as uow:
        assert await uow.users.by_telegram_id(ADMIN_TG) is None


@pytest.mark.parametrize(
    ("bot", "message"),
    [
        ({"webhook_url": "https://bot.example.test/hook"}, "webhook_secret: required with webhook_url"),
        ({"webhook_url": "https://bot.example.test/hook", "webhook_secret": "short"}, "16 to 256 characters"),
        ({"listen": "nowhere"}, "host:port"),
    ],
)
def test_webhook_settings_are_checked(bot: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({"bot": bot})


async def test_a_body_past_the_limit_is_refused(webhook_bot: tuple[str, Dispatcher], fake_bot_api: FakeBotAPI) -> None:
    url, _ = webhook_bot
    update = _start_update(fake_bot_api)
    update["message"]["text"] = "/start " + "x" * 2_000_000
    async with httpx.AsyncClient() as client:
        response = await client.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == 413
    await asyncio.sleep(0.2)
    assert fake_bot_api.sent(ADMIN_TG) == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"update_id": "x"}'])
async def test_a_post_that_is_no_update_changes_nothing(
    webhook_bot: tuple[str, Dispatcher], fake_bot_api: FakeBotAPI, body: bytes
) -> None:
    url, dispatcher = webhook_bot
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url,
            content=body,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"},
        )
    assert response.status_code >= 400  # refused either way; aiogram's own server says it its way
    if dispatcher["settings"].api.enabled:  # behind the API's edge: a clear 400 naming what is wrong
        assert response.status_code == 400 and response.json()["code"] == "invalid_input"
    assert fake_bot_api.sent() == []
