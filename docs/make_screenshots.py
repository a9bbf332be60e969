"""Re-take the pictures in docs/pictures/ from the sandbox (``leadbot demo``), so they never go stale.

    python docs/make_screenshots.py            # writes docs/pictures/*.png
    python docs/make_screenshots.py --out DIR  # somewhere else

It starts the demo in this process (the real bot, the seeded team and leads), drives the page in
headless Chromium with Playwright, as a person would, and saves one PNG per screen. It needs the test
extras (``pip install -e '.[test]'``, for ``playwright``) and the system's Chromium (``apt-get install
chromium``; set ``LEADBOT_CHROMIUM`` if it lives elsewhere). It never downloads a browser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from playwright.async_api import Page, async_playwright, expect  # noqa: E402

from bot.demo.run import running_demo  # noqa: E402
from bot.demo.seed import MOP, ROP, SELLER_A  # noqa: E402

CHROMIUM = os.environ.get("LEADBOT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT = 20_000


async def _as(page: Page, telegram_id: int) -> None:
    await page.click(f'.person[data-id="{telegram_id}"]')


async def _type(page: Page, text: str, expect_text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#messages .msg.bot").last).to_contain_text(expect_text, timeout=WAIT)


async def _tap(page: Page, caption: str, expect_text: str | None = None) -> None:
    await page.locator("#messages .kb button", has_text=caption).last.click()
    if expect_text is not None:
        await expect(page.locator("#messages .msg.bot").last).to_contain_text(expect_text, timeout=WAIT)


async def _shot(page: Page, out: Path, name: str) -> None:
    await page.mouse.move(0, 0)  # no button caught hovered
    await page.wait_for_timeout(300)  # let the page settle (scroll, fonts)
    path = out / f"{name}.png"
    await page.screenshot(path=str(path))
    print(f"{path} ({path.stat().st_size // 1024} KB)")


async def take(out: Path) -> None:
    async with running_demo(0) as demo, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 1100, "height": 860}, locale="ru-RU", timezone_id="Asia/Tashkent"
            )
            page = await context.new_page()
            await page.goto(demo.url)

            # The list with its filters, as the head of sales sees it (after the day's digest, which the
            # demo sends at start when it is past the digest time, so it does not land below the list).
            await _as(page, ROP.telegram_id)
            with contextlib.suppress(AssertionError):
                await expect(page.locator("#messages .msg.bot", has_text="Сводка")).to_have_count(1, timeout=5000)
            await _type(page, "/leads", "Лиды")
            await _shot(page, out, "leads-list")

            # A new lead typed in by the lead manager and given to a salesperson...
            await _as(page, MOP.telegram_id)
            await _type(page, "/new", "Как зовут клиента")
            await _type(page, "Камила Расулова", "Телефон клиента")
            await _type(page, "+998 93 111-22-33", "Откуда пришёл клиент")
            await _tap(page, "Instagram", "Бюджет")
            await _type(page, "85000", "Заметки")
            await _type(page, "3-комнатная в Чиланзаре, рядом метро", "Кому из продажников")
            await _tap(page, SELLER_A.first_name, "Проверьте новый лид")
            await _tap(page, "Создать", "создан")
            created = await page.locator("#messages .msg.bot").last.inner_text()
            lead_id = _lead_id(created)

            # ...who is notified in their chat,
            await _as(page, SELLER_A.telegram_id)
            await expect(page.locator("#messages .msg.bot").last).to_contain_text(f"#{lead_id}", timeout=WAIT)
            await _shot(page, out, "notification")

            # takes it into work (the notification becomes the lead's card) and comments on it.
            await _tap(page, "Взять в работу", "в работе")
            await _tap(page, "Комментарий")
            await _type(page, "Позвонил, показ в субботу в 11:00", "Позвонил, показ в субботу")
            await page.wait_for_timeout(3500)  # the last toast fades first
            await _shot(page, out, "lead-card")

            # The head of sales' numbers for the last 30 days: the charts, then the figures as text.
            await _as(page, ROP.telegram_id)
            await _type(page, "/stats", "выберите период")
            await _tap(page, "30 дней", "Статистика команды")
            await page.wait_for_timeout(1500)  # the charts load
            # Up a little, so the last chart shows whole above the start of the figures.
            await page.locator("#messages").evaluate(
                "box => { box.scrollTop = box.scrollHeight - box.clientHeight - 330; }"
            )
            await _shot(page, out, "stats")
        finally:
            await browser.close()


def _lead_id(text: str) -> int:
    match = re.search(r"#(\d+)", text)
    if match is None:
        raise SystemExit(f"no lead number in the bot's answer: {text!r}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=HERE / "pictures", help="where the PNGs go")
    args: Any = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set LEADBOT_CHROMIUM)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(take(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
