"""Issue 10: two real ``leadbot run`` processes behind webhooks on one PostgreSQL and one Redis, one of
them killed with SIGKILL in the middle of an update.

The test plays Telegram and the load balancer: it posts each update to one instance (one person's
steps alternate between the two) and, when an instance does not answer, posts the same update to the
other, as Telegram does with an update it could not deliver. Then: no update lost (every conversation
ends in its lead, with what was typed, in order), none handled twice (one "created" per person, no
duplicate or error answers), every notification and every reminder sent once.

Needs LEADBOT_TEST_DATABASE_URL (PostgreSQL) and LEADBOT_TEST_REDIS_URL; CI runs it with both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.config import Settings
from db.models import Lead
from db.uow import UnitOfWorkFactory
from tests.conftest import ADMIN_TG, SERVER_DATABASE_URL, SERVER_REDIS_URL, Team
from tests.fake_bot_api import FakeBotAPI

pytestmark = pytest.mark.skipif(
    not (SERVER_DATABASE_URL and SERVER_REDIS_URL),
    reason="two instances need PostgreSQL and Redis: set LEADBOT_TEST_DATABASE_URL and LEADBOT_TEST_REDIS_URL",
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "instances-webhook-secret-0123456789"
PATH = "/telegram/hook"
TOKEN = "42:TEST-TOKEN"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Instance:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def _config(tmp: Path, name: str, port: int, api: FakeBotAPI, database_url: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(
        f"""
[bot]
token = "{TOKEN}"
api_server = "{api.base_url}"
webhook_url = "https://bot.example.test{PATH}"
webhook_secret = "{SECRET}"
listen = "127.0.0.1:{port}"

[database]
url = "{database_url}"

[redis]
url = "{SERVER_REDIS_URL}"

[access]
admins = [{ADMIN_TG}]

[notifications]
poll_interval = "1s"

[reminders]
tick = "1s"
new_lead_after = "3s"
repeat_every = "1d"
working_hours = "00:00-00:00"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def fresh_redis_marks() -> Iterator[None]:
    """Marks of handled updates left by an earlier run would make this run's update ids look handled."""
    import redis

    client = redis.Redis.from_url(SERVER_REDIS_URL)
    for key in client.scan_iter(match=f"leadbot:{TOKEN.split(':')[0]}:update:*"):
        client.delete(key)
    yield
    client.close()


class Cluster:
    """The instances of the test, started as ``leadbot run`` processes with their own config files."""

    def __init__(self, tmp: Path, api: FakeBotAPI, database_url: str) -> None:
        self.tmp = tmp
        self.api = api
        self.database_url = database_url
        self.instances: list[Instance] = []
        self.ever: list[Instance] = []

    async def start(self, name: str, port: int | None = None) -> Instance:
        port = port or _free_port()
        log = self.tmp / f"{name}-{len(self.ever)}.log"
        with log.open("wb") as output:  # the child keeps its own descriptor
            process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
                [
                    sys.executable,
                    "-m",
                    "bot",
                    "run",
                    "--config",
                    str(_config(self.tmp, name, port, self.api, self.database_url)),
                ],
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        instance = Instance(name, port, process, log)
        self.ever.append(instance)
        async with httpx.AsyncClient() as client:  # up once it listens (the webhook is set right after)
            for _ in range(900):
                if not instance.alive:
                    raise AssertionError(f"instance {name} died at start: {log.read_text()[-3000:]}")
                try:
                    await client.get(f"http://127.0.0.1:{port}/", timeout=5)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"instance {name} never listened: {log.read_text()[-3000:]}")
        return instance

    def stop_all(self) -> None:
        for instance in self.ever:
            if instance.alive:
                instance.process.send_signal(signal.SIGTERM)
        for instance in self.ever:
            try:
                instance.process.wait(30)
            except subprocess.TimeoutExpired:
                instance.process.kill()
                instance.process.wait(10)


@pytest.fixture
async def cluster(tmp_path: Path, settings: Settings, team: Team, fresh_redis_marks: None) -> AsyncIterator[Cluster]:
    # Telegram answers after a realistic round trip, so an update is still at work when its instance dies.
    async with FakeBotAPI(delay=0.25) as api:
        running = Cluster(tmp_path, api, settings.database.url)
        try:
            running.instances = list(await asyncio.gather(running.start("a"), running.start("b")))
            yield running
        finally:
            running.stop_all()


class Telegram:
    """Posts updates to the instances as Telegram behind a load balancer would, redelivering on failure."""

    def __init__(self, api: FakeBotAPI, instances: list[Instance], client: httpx.AsyncClient) -> None:
        self.api = api
        self.instances = instances
        self.client = client
        self.redelivered = 0
        # Held while one instance is being killed, so the kill lands in the one update chosen for it.
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0

    async def post(self, update: dict[str, Any], prefer: int, *, through_gate: bool = True) -> None:
        if through_gate:
            await self.gate.wait()
        self.in_flight += 1
        try:
            await self._post(update, prefer)
        finally:
            self.in_flight -= 1

    async def _post(self, update: dict[str, Any], prefer: int) -> None:
        order = [self.instances[prefer % 2], self.instances[(prefer + 1) % 2]]
        for attempt in range(40):
            instance = order[attempt % 2]
            try:
                answer = await self.client.post(
                    instance.url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=30
                )
                if answer.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            self.redelivered += 1
            await asyncio.sleep(0.2)
        raise AssertionError(f"update {update['update_id']} was never accepted")

    def button(self, user_id: int, caption: str) -> tuple[str, int]:
        for request in reversed(self.api.requests):
            if request.chat_id != user_id or request.method not in ("sendMessage", "editMessageText"):
                continue
            for text, data in request.buttons:
                if caption.casefold() in text.casefold():
                    return data, int(request.params.get("message_id") or 1)
        seen = [(r.method, r.text[:60]) for r in self.api.requests if r.chat_id == user_id]
        raise AssertionError(f"no button {caption!r} in the chat of {user_id}; it saw {seen}")


@dataclass
class Person:
    user_id: int
    name: str
    client: str
    phone: str


async def _walk_new(telegram: Telegram, person: Person, offset: int, kill_at: int, victim: Instance) -> None:
    """One person's /new, each step posted to the other instance than the one before.

    At step ``kill_at`` (posted to ``victim``) the victim is killed while that update is at work: its
    conversation step is saved and its reply is on its way to Telegram (answered after 0.25 s).
    """
    steps: list[tuple[str, str]] = [
        ("say", "/new"),
        ("say", person.client),
        ("say", person.phone),
        ("press", "Instagram"),
        ("say", "70k"),
        ("say", f"Заметка {person.name}"),
        ("press", "Иванов"),
        ("press", "Создать"),
    ]
    for index, (kind, value) in enumerate(steps):
        if index != kill_at:
            await telegram.gate.wait()
        if kind == "say":
            update = telegram.api.push_message(person.user_id, value, first_name=person.name)
        else:
            data, message_id = telegram.button(person.user_id, value)
            update = telegram.api.push_callback(person.user_id, data, message_id=message_id, first_name=person.name)
        if index != kill_at:
            await telegram.post(update, prefer=index + offset)
            continue
        telegram.gate.clear()
        while telegram.in_flight:  # noqa: ASYNC110 - the others' posts already on their way finish first
            await asyncio.sleep(0.01)
        mark = len(telegram.api.requests)
        post = asyncio.create_task(telegram.post(update, prefer=telegram.instances.index(victim), through_gate=False))
        await telegram.api.wait_for("sendMessage", chat_id=person.user_id, after=mark, timeout=30)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        await post  # refused by the dead instance, posted again to the other
        telegram.gate.set()


async def test_two_instances_behind_webhooks_survive_a_sigkill(
    cluster: Cluster, team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    api, (first, second) = cluster.api, cluster.instances
    people = [
        Person(team.admin.chat_id, "Админ", "Клиент Альфа", "+998 90 111 22 01"),
        Person(team.rop.chat_id, "Роп", "Клиент Бета", "+998 90 111 22 02"),
        Person(team.mop.chat_id, "Моп", "Клиент Гамма", "+998 90 111 22 03"),
    ]
    async with httpx.AsyncClient() as client:
        telegram = Telegram(api, [first, second], client)
        walks = [_walk_new(telegram, p, offset, 4 if offset == 0 else -1, first) for offset, p in enumerate(people)]
        await asyncio.wait_for(asyncio.gather(*walks), 120)
    assert not first.alive and second.alive
    assert telegram.redelivered >= 1  # the killed instance's update really went to the other one

    # Every conversation ended in its lead, with what was typed, in the order it was typed.
    async with uow_factory(read_only=True) as uow:
        leads = (await uow.session.scalars(select(Lead).order_by(Lead.id))).all()
    assert sorted(lead.client_name for lead in leads) == sorted(p.client for p in people)
    for lead in leads:
        person = next(p for p in people if p.client == lead.client_name)
        assert (lead.source, lead.budget, lead.notes) == ("Instagram", 70_000, f"Заметка {person.name}")
        assert lead.assigned_to_id == team.seller.id

    # Nothing handled twice: one "created" answer each, no error, no duplicate-phone refusal.
    for person in people:
        said = ("sendMessage", "editMessageText")
        texts = [r.text for r in api.requests if r.chat_id == person.user_id and r.method in said]
        assert sum("создан." in text for text in texts) == 1, texts
        assert not any("пошло не так" in t or "уже есть" in t or "не понял" in t.casefold() for t in texts), texts

    # Notifications and reminders: each once, though both instances run the delivery worker and the
    # scheduler (the killed one's delivery turn lapses and the survivor takes over).
    def to_seller() -> list[str]:
        return [r.text for r in api.calls("sendMessage", chat_id=team.seller.chat_id)]

    async def settled() -> Counter[tuple[str, str]]:
        for _ in range(300):
            counts = Counter(
                (kind, lead.client_name)
                for text in to_seller()
                for lead in leads
                for kind in ("reminder", "notice")
                if lead.client_name in text and (("⏰" in text) == (kind == "reminder"))
            )
            if len(counts) == 2 * len(leads):
                await asyncio.sleep(3)  # a doubled one would come within a tick or two
                return Counter(
                    (kind, lead.client_name)
                    for text in to_seller()
                    for lead in leads
                    for kind in ("reminder", "notice")
                    if lead.client_name in text and (("⏰" in text) == (kind == "reminder"))
                )
            await asyncio.sleep(0.2)
        raise AssertionError(f"notifications never settled: {to_seller()}")

    counts = await settled()
    assert set(counts.values()) == {1}, counts

    # The killed instance comes back, and the team goes on through both: a lead created above is seen on
    # one, reassigned through the other, taken into work and closed alternating between them.
    revived = await cluster.start("a", first.port)
    lead = next(lead for lead in leads if lead.client_name == "Клиент Альфа")
    admin, seller2 = people[0], team.seller2.chat_id
    async with httpx.AsyncClient() as client:
        telegram = Telegram(api, [revived, second], client)

        async def say(user_id: int, text: str, on: int) -> None:
            await telegram.post(api.push_message(user_id, text), prefer=on)

        async def press(user_id: int, caption: str, on: int) -> None:
            data, message_id = telegram.button(user_id, caption)
            await telegram.post(api.push_callback(user_id, data, message_id=message_id), prefer=on)

        await say(admin.user_id, f"/lead {lead.id}", 0)
        assert "Клиент Альфа" in api.calls("sendMessage", chat_id=admin.user_id)[-1].text
        await press(admin.user_id, "Назначить", 1)
        await press(admin.user_id, "Второй", 0)
        await say(seller2, f"/lead {lead.id}", 1)
        await press(seller2, "Статус", 0)
        await press(seller2, "в работе", 1)
        await press(seller2, "Статус", 0)
        await press(seller2, "закрыт", 1)
    assert telegram.redelivered == 0  # both up: every post answered where it was sent
    async with uow_factory(read_only=True) as uow:
        closed = await uow.session.get(Lead, lead.id, populate_existing=True)
    assert closed is not None
    assert (closed.status, closed.assigned_to_id) == ("закрыт", team.seller2.id)
    assigned = f"Вам передан лид #{lead.id}"
    handed_over = f"Лид #{lead.id} «Клиент Альфа» передан другому продажнику"

    def told() -> tuple[int, int]:
        return (
            sum(assigned in r.text for r in api.calls("sendMessage", chat_id=seller2)),
            sum(handed_over in r.text for r in api.calls("sendMessage", chat_id=team.seller.chat_id)),
        )

    for _ in range(200):  # told by whichever instance holds the delivery turn
        if told() == (1, 1):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # a doubled one would come within a poll or two
    assert told() == (1, 1)
