"""The demo page in a real browser: headless Chromium driven by Playwright, every step a click or typing.

The browser is the system's Chromium (``apt-get install chromium``); Playwright's own browser download
is never used. Without ``/usr/bin/chromium`` (or without the ``playwright`` package) the test is skipped
and says why.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.demo.run import RunningDemo, running_demo
from bot.demo.seed import ADMIN, NEWCOMERS
from db.engine import open_database
from db.enums import LeadStatus, Role
from db.models import Lead, User

CHROMIUM = Path(os.environ.get("LEADBOT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium to run the browser test"
)
async_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed (pip install -e '.[test]')"
)
expect = async_api.expect
TIMEOUT = 20_000  # ms: each step waits at most this long for the bot


@pytest.fixture
async def demo() -> AsyncIterator[RunningDemo]:
    async with running_demo(0) as running:
        yield running


@pytest.fixture
async def page(demo: RunningDemo) -> AsyncIterator[Any]:
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="ru-RU")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(demo.url)
            yield page
            assert errors == [], errors  # no script error on the page along the way
        finally:
            await browser.close()


async def _type(page: Any, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def _last_bot_says(page: Any, text: str) -> None:
    await expect(page.locator("#messages .msg.bot").last).to_contain_text(text, timeout=TIMEOUT)


async def _tap(page: Any, caption: str) -> None:
    """Tap the newest inline button whose caption has ``caption``."""
    button = page.locator("#messages .kb button", has_text=caption).last
    await expect(button).to_be_visible(timeout=TIMEOUT)
    await button.click()


async def _as(page: Any, telegram_id: int) -> None:
    await page.click(f'.person[data-id="{telegram_id}"]')
    await expect(page.locator(".person.active")).to_have_attribute("data-id", str(telegram_id))


async def test_an_admin_invites_a_salesperson_who_gets_a_new_lead_and_takes_it_into_work(
    demo: RunningDemo, page: Any
) -> None:
    newcomer = NEWCOMERS[0]

    # --- a button left behind by a conversation answers with an alert box ---
    await _as(page, ADMIN.telegram_id)
    await _type(page, "/new")
    await _last_bot_says(page, "Как зовут клиента")
    await _type(page, "/leads")
    await _last_bot_says(page, "Лиды")
    await _tap(page, "Отмена")
    await expect(page.locator("#alert")).to_be_visible(timeout=TIMEOUT)
    await expect(page.locator("#alert-text")).to_contain_text("устарела")
    await page.click("#alert-ok")
    await expect(page.locator("#alert")).to_be_hidden()

    # --- the admin invites a salesperson; the newcomer opens the link and joins ---
    await _type(page, "/invite seller")
    await _last_bot_says(page, "Приглашение в команду")
    await page.locator("#messages .msg.bot a[href*='?start=']").last.click()
    await page.click(f'#linkpick-people button[data-id="{newcomer.telegram_id}"]')
    await expect(page.locator(".person.active")).to_have_attribute("data-id", str(newcomer.telegram_id))
    await _last_bot_says(page, newcomer.first_name)

    # --- the admin creates a lead by typing and tapping, and assigns it to the newcomer ---
    await _as(page, ADMIN.telegram_id)
    await _type(page, "/new")
    await _last_bot_says(page, "Как зовут клиента")
    await _type(page, "Камила <b>Расулова</b>")
    await _last_bot_says(page, "Телефон клиента")
    await _type(page, "+998 93 111-22-33")
    await _last_bot_says(page, "Откуда пришёл клиент")
    await _tap(page, "Рекомендация")
    await _last_bot_says(page, "Бюджет")
    await _type(page, "120000")
    await _last_bot_says(page, "Заметки")
    await _type(page, "Дом в Ташкентской области")
    await _last_bot_says(page, "Кому из продажников")
    await _tap(page, newcomer.first_name)
    await _last_bot_says(page, "Проверьте новый лид")
    # What the client's name said is shown as typed, never as markup.
    await expect(page.locator("#messages .msg.bot").last).to_contain_text("Камила <b>Расулова</b>")
    await _tap(page, "Создать")
    await _last_bot_says(page, "создан")
    created = await page.locator("#messages .msg.bot").last.inner_text()
    lead_id = int(re.search(r"#(\d+)", created).group(1))  # type: ignore[union-attr]

    # --- the newcomer sees the notification arrive (an unread mark first) and takes the lead ---
    badge = page.locator(f'.person[data-id="{newcomer.telegram_id}"] .badge')
    await expect(badge).to_be_visible(timeout=TIMEOUT)
    await _as(page, newcomer.telegram_id)
    await _last_bot_says(page, f"Новый лид #{lead_id}")
    await _tap(page, "Взять в работу")
    await expect(page.locator("#toasts .toast").last).to_contain_text("в работе", timeout=TIMEOUT)

    status = await _wait_for_status(demo, lead_id, LeadStatus.IN_WORK)
    assert status == LeadStatus.IN_WORK
    database = open_database(demo.settings.database.url)
    try:
        async with database.reader() as session:
            lead = await session.get(Lead, lead_id)
            joined = await session.scalar(select(User).where(User.telegram_id == newcomer.telegram_id))
    finally:
        await database.dispose()
    assert joined is not None and joined.role == Role.SELLER
    assert lead is not None and lead.assigned_to_id == joined.id and lead.phone_number == "+998931112233"


async def _wait_for_status(demo: RunningDemo, lead_id: int, wanted: LeadStatus) -> LeadStatus | None:
    database = open_database(demo.settings.database.url)
    status: LeadStatus | None = None
    try:
        async with asyncio.timeout(TIMEOUT / 1000):
            while status != wanted:
                async with database.reader() as session:
                    status = await session.scalar(select(Lead.status).where(Lead.id == lead_id))
                await asyncio.sleep(0.1)
    finally:
        await database.dispose()
    return status


ROOT = Path(__file__).resolve().parent.parent


def test_the_screenshot_script_retakes_every_picture_the_readme_shows(tmp_path: Path) -> None:
    """``docs/make_screenshots.py`` still drives the page to every screen: a picture that would go stale
    (a caption renamed, a screen gone) fails here rather than silently."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LEADBOT_")}
    env["LEADBOT_CHROMIUM"] = str(CHROMIUM)
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_screenshots.py"), "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"\(docs/pictures/([\w-]+\.png)\)", readme))
    assert len(shown) >= 3
    assert {path.name for path in tmp_path.glob("*.png")} == shown
    for name in shown:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", name
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (1100, 860), name  # the script's viewport: a whole screen, not an error page
        assert len(data) > 20_000, name  # a chat with messages, not a blank page
