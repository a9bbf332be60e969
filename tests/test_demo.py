"""``leadbot demo`` without a browser: the real bot against the Bot API stand-in, driven through the
page's own HTTP endpoints; the stand-in's Bot API answers; what the page may render."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from bot.demo.html import plain_text, safe_html
from bot.demo.run import DEMO_TOKEN, RunningDemo, running_demo
from bot.demo.seed import MOP, ROP, SELLER_A, SELLER_B, TEAM
from db.engine import open_database
from db.enums import LeadStatus, Role
from db.models import Comment, Lead, LeadHistory, User
from tests.demo_support import PageClient, buttons


@pytest.fixture
async def demo() -> AsyncIterator[RunningDemo]:
    async with running_demo(0) as running:
        yield running


@pytest.fixture
async def page(demo: RunningDemo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=demo.server.base_url, timeout=30) as client:
        yield client


# ---- what the page may render ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("<b>Лид #5</b> <i>в работе</i>", "<b>Лид #5</b> <i>в работе</i>"),
        ("<u>u</u><s>s</s><code>c</code><pre>p</pre>", "<u>u</u><s>s</s><code>c</code><pre>p</pre>"),
        ("<strong>b</strong><em>i</em>", "<b>b</b><i>i</i>"),
        ("Иван &lt;b&gt;Петров&lt;/b&gt;", "Иван &lt;b&gt;Петров&lt;/b&gt;"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ('<img src=x onerror="alert(1)">', "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"),
        ('<b onclick="x()">b</b>', "<b>b</b>"),
        ('<a href="javascript:alert(1)">x</a>', "&lt;a href=&quot;javascript:alert(1)&quot;&gt;x&lt;/a&gt;"),
        (
            '<a href="https://t.me/bot?start=abc&amp;x=1" onclick="y">link</a>',
            '<a href="https://t.me/bot?start=abc&amp;x=1" target="_blank" rel="noopener noreferrer">link</a>',
        ),
        ("<b>open", "<b>open</b>"),
        ("stray</b> close", "stray&lt;/b&gt; close"),
        ("<b><i>nested</b> after", "<b><i>nested</i></b> after"),
        ("<!-- c --><br/>", "&lt;!-- c --&gt;&lt;br/&gt;"),
        (
            "Ссылка:\nhttps://t.me/Bot?start=a_B-1.",
            'Ссылка:\n<a href="https://t.me/Bot?start=a_B-1" target="_blank" rel="noopener noreferrer">'
            "https://t.me/Bot?start=a_B-1</a>.",
        ),
        (
            'http://x.y/"><script>',
            '<a href="http://x.y/" target="_blank" rel="noopener noreferrer">http://x.y/</a>"&gt;&lt;script&gt;',
        ),
    ],
)
def test_the_page_renders_telegram_html_and_escapes_everything_else(sent: str, shown: str) -> None:
    assert safe_html(sent) == shown


def test_text_without_parse_mode_is_shown_as_typed() -> None:
    assert safe_html("<b>x</b> & y", None) == "&lt;b&gt;x&lt;/b&gt; &amp; y"
    assert plain_text("<b>Лид</b> &lt;1&gt;") == "Лид <1>"


# ---- the Bot API stand-in ------------------------------------------------------------------------------


async def test_the_stand_in_answers_only_the_demo_token_and_any_method(
    demo: RunningDemo, page: httpx.AsyncClient
) -> None:
    wrong = await page.post("/bot42:WRONG/getMe")
    assert wrong.status_code == 401 and wrong.json()["ok"] is False
    me = (await page.post(f"/bot{DEMO_TOKEN}/getMe")).json()
    assert me["ok"] and me["result"]["is_bot"]
    unknown = (await page.post(f"/bot{DEMO_TOKEN}/setChatMenuButton", json={})).json()
    assert unknown == {"ok": True, "result": True}
    # A document is kept and linked from the chat.
    sent = await page.post(
        f"/bot{DEMO_TOKEN}/sendDocument",
        data={
            "chat_id": str(MOP.telegram_id),
            "document": "attach://f1",
            "caption": "<b>Отчёт</b>",
            "parse_mode": "HTML",
        },
        files={"f1": ("report.csv", b"id;name\n1;x\n", "text/csv")},
    )
    assert sent.json()["ok"], sent.text
    message = (await PageClient(page, MOP.telegram_id).messages())[-1]
    assert message["files"][0]["name"] == "report.csv" and message["html"] == "<b>Отчёт</b>"
    download = await page.get(message["files"][0]["url"])
    assert download.content == b"id;name\n1;x\n"
    # Editing a message that is not there fails as Telegram's does.
    missing = await page.post(
        f"/bot{DEMO_TOKEN}/editMessageText", json={"chat_id": MOP.telegram_id, "message_id": 99999, "text": "x"}
    )
    assert missing.status_code == 400 and "not found" in missing.json()["description"]


# ---- the demo end to end, through the page's endpoints -------------------------------------------------


async def test_the_demo_is_seeded_with_a_team_and_leads(demo: RunningDemo, page: httpx.AsyncClient) -> None:
    people = (await page.get("/demo/api/people")).json()["people"]
    assert {p["id"] for p in people} >= {m.telegram_id for m in TEAM}
    assert "<html" in (await page.get("/")).text
    database = open_database(demo.settings.database.url)
    try:
        async with database.reader() as session:
            roles = sorted((await session.scalars(select(User.role))).all())
            leads = (await session.execute(select(Lead.status, func.count()).group_by(Lead.status))).all()
            phones = (await session.scalars(select(Lead.phone_number))).all()
            comments = await session.scalar(select(func.count()).select_from(Comment))
    finally:
        await database.dispose()
    assert roles == sorted([Role.ADMIN, Role.ROP, Role.MOP, Role.SELLER, Role.SELLER, Role.FINANCE])
    counts = dict(leads)
    assert sum(counts.values()) >= 30 and set(counts) == set(LeadStatus)
    assert all(re.fullmatch(r"\+998\d{9}", phone) for phone in phones)
    assert comments


async def test_a_lead_is_created_assigned_and_taken_into_work_on_the_page(
    demo: RunningDemo, page: httpx.AsyncClient
) -> None:
    mop, rop = PageClient(page, MOP.telegram_id), PageClient(page, ROP.telegram_id)
    seller, other = PageClient(page, SELLER_A.telegram_id), PageClient(page, SELLER_B.telegram_id)

    await mop.say("/new", expect="Как зовут клиента")
    await mop.say("Камила <i>Расулова</i>", expect="Телефон клиента")
    await mop.say("+998 90 765-43-21", expect="Откуда пришёл клиент")
    await mop.press("Instagram", expect="Бюджет")
    await mop.say("85000", expect="Заметки")
    await mop.say("3-комнатная в Чиланзаре", expect="Кому из продажников")
    summary = await mop.press("Пропустить", expect="Проверьте новый лид")
    assert "Камила &lt;i&gt;Расулова&lt;/i&gt;" in summary["html"]  # what the client typed, shown as typed
    created = await mop.press("Создать", expect="создан")
    lead_id = int(re.search(r"#(\d+)", created["html"]).group(1))  # type: ignore[union-attr]

    await rop.say(f"/assign {lead_id}", expect="Кому назначить")
    await rop.press("Анвар")
    notice = await seller.wait_for("Вам передан лид", within=20)
    assert "Камила" in notice["html"]
    assert not [m for m in await other.messages() if "Камила" in m["html"]]

    await seller.press("Взять в работу")
    async with asyncio.timeout(20):
        while True:
            database = open_database(demo.settings.database.url)
            try:
                async with database.reader() as session:
                    lead = await session.get(Lead, lead_id)
                    steps = (
                        await session.scalars(
                            select(LeadHistory.action).where(LeadHistory.lead_id == lead_id).order_by(LeadHistory.id)
                        )
                    ).all()
            finally:
                await database.dispose()
            assert lead is not None
            if lead.status == LeadStatus.IN_WORK:
                break
            await asyncio.sleep(0.1)
    assert lead.phone_number == "+998907654321" and lead.budget == 85000 and lead.source == "Instagram"
    assert lead.assigned_to_id is not None
    assert list(steps) == ["created", "assigned", "status_changed"]
    # The salesperson saw the press answered with a toast; the MOP who created the lead hears about it.
    assert any("в работе" in alert["text"] and not alert["show_alert"] for alert in await seller.alerts())
    await mop.wait_for("в работе", within=20)


async def test_a_button_edits_its_message_in_place_and_every_press_is_answered(
    demo: RunningDemo, page: httpx.AsyncClient
) -> None:
    rop = PageClient(page, ROP.telegram_id)
    listing = await rop.say("/leads", expect="Лиды · стр")
    await rop.press("Статус ▾")
    async with asyncio.timeout(15):
        while True:
            edited = next(m for m in await rop.messages() if m["message_id"] == listing["message_id"])
            if edited["rev"] != listing["rev"]:
                break
            await asyncio.sleep(0.05)
    assert edited["edited"]
    assert buttons(edited) != buttons(listing)
    assert len([m for m in await rop.messages() if m["message_id"] == listing["message_id"]]) == 1
    await asyncio.sleep(0.3)
    assert demo.server.unanswered_callbacks == 0


async def test_reminders_arrive_in_the_salespersons_chat_on_the_fast_clock(
    demo: RunningDemo, page: httpx.AsyncClient
) -> None:
    # The demo's reminder job runs every few seconds (``leadbot run``'s default is a minute), all day.
    assert demo.settings.reminders.tick <= timedelta(seconds=10)
    database = open_database(demo.settings.database.url)
    try:
        async with database.reader() as session:
            seller = await session.scalar(select(User).where(User.telegram_id == SELLER_A.telegram_id))
            assert seller is not None
            lead = await session.scalar(
                select(Lead)
                .where(Lead.status == LeadStatus.NEW, Lead.assigned_to_id == seller.id)
                .order_by(Lead.next_reminder_at)
                .limit(1)
            )
        assert lead is not None and lead.next_reminder_at is not None  # seeded to be reminded soon
        # Due now, rather than in the minute or so the seed leaves before the first one.
        async with database.writer() as session:
            await session.execute(
                update(Lead).where(Lead.id == lead.id).values(next_reminder_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            await session.commit()
    finally:
        await database.dispose()

    reminder = await PageClient(page, SELLER_A.telegram_id).wait_for(f"Лид #{lead.id} ждёт", within=40)
    assert "Напоминание №1" in reminder["html"]
    assert any("Взять в работу" in caption for caption in buttons(reminder))


async def test_the_page_refuses_what_a_person_cannot_do(page: httpx.AsyncClient) -> None:
    assert (await page.post("/demo/api/chat/1/send", json={"text": "hi"})).status_code == 404
    assert (await page.post(f"/demo/api/chat/{MOP.telegram_id}/send", json={"text": "  "})).status_code == 400
    forged = await page.post(f"/demo/api/chat/{MOP.telegram_id}/press", json={"message_id": 1, "data": "ld:D:1"})
    assert forged.status_code == 404
    # Another site in the same browser: a plain form post, or a DNS name pointing at 127.0.0.1.
    as_form = await page.post(f"/demo/api/chat/{MOP.telegram_id}/send", content=b'{"text": "/new"}')
    assert as_form.status_code == 415
    rebound = await page.get("/demo/api/changes", headers={"Host": "attacker.example:8765"})
    assert rebound.status_code == 421


@pytest.mark.parametrize("open_browser", [True, False])
async def test_leadbot_demo_opens_the_page_in_a_browser_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], open_browser: bool
) -> None:
    import webbrowser

    from bot.demo import run

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *args, **kwargs: opened.append(url) or True)
    async with running_demo(0) as demo:
        await demo.dispatcher.stop_polling()  # serve() then returns as the bot stops, as on Ctrl-C

        @contextlib.asynccontextmanager
        async def the_running_demo(port: int, *, handle_signals: bool) -> AsyncIterator[RunningDemo]:
            assert (port, handle_signals) == (0, True)
            yield demo

        monkeypatch.setattr(run, "running_demo", the_running_demo)
        await asyncio.wait_for(run.serve(0, open_browser=open_browser), timeout=30)
    assert f"open {demo.url}" in capsys.readouterr().out
    assert opened == ([demo.url] if open_browser else [])


# ---- the installed command ----------------------------------------------------------------------------

_BESIDE = Path(sys.executable).parent / "leadbot"
LEADBOT = str(_BESIDE) if _BESIDE.exists() else shutil.which("leadbot")


@pytest.mark.skipif(LEADBOT is None, reason="the leadbot command is not installed (pip install -e .)")
async def test_leadbot_demo_prints_its_address_serves_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    assert LEADBOT is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEADBOT_")}
    process = await asyncio.create_subprocess_exec(
        LEADBOT,
        "demo",
        "--port",
        "0",
        "--no-browser",
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        async with asyncio.timeout(90):
            line = (await process.stdout.readline()).decode()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        async with httpx.AsyncClient(base_url=url.group(0), timeout=10) as client:
            assert "LeadBot" in (await client.get("/")).text
            await client.post(f"/demo/api/chat/{MOP.telegram_id}/send", json={"text": "/start"})
            await PageClient(client, MOP.telegram_id).wait_for("Ольга")
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # nothing left behind: the database was temporary


@pytest.mark.skipif(LEADBOT is None, reason="the leadbot command is not installed (pip install -e .)")
async def test_leadbot_demo_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    assert LEADBOT is not None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {key: value for key, value in os.environ.items() if not key.startswith("LEADBOT_")}
        process = await asyncio.create_subprocess_exec(
            LEADBOT,
            "demo",
            "--port",
            str(port),
            "--no-browser",
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with asyncio.timeout(90):
            _out, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert f"cannot start the demo on 127.0.0.1:{port}" in lines[-1]
    assert "Traceback" not in err.decode()
