"""Latency benchmark (issue 9): the real ``leadbot run`` against a Bot API that answers like Telegram.

Run from the repository root::

    .venv/bin/python bench/bench_latency.py      # options: --rounds 3 --leads 5000 --rate 35 --seconds 25
    .venv/bin/python bench/bench_latency.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench

What runs:

- a fake Bot API (``tests/fake_bot_api.FakeBotAPI``) on 127.0.0.1 in this process, answering every method
  but ``getUpdates`` after a fixed delay (the round trip to Telegram; 150 or 300 ms), the requests
  overlapping as Telegram's do; ``getUpdates`` answers as soon as updates are queued;
- **the bot**: ``leadbot run --config <tmp>/config.toml`` as a subprocess, long-polling that fake, with
  the HTTP API enabled on a free local port, over a migrated SQLite file (or, with ``--database-url
  postgresql+asyncpg://…``, a PostgreSQL database the benchmark owns: its ``public`` schema is dropped and
  made again by the real migrations) seeded through the core's repositories (a team of 150: 2 admins,
  8 heads of sales, 90 sales managers, 40 salespeople, 10 financiers; ``--leads`` leads, 90 % assigned
  to the salespeople; an API token for an admin);
- **the control**: a minimal aiogram bot with no database (``python bench/bench_latency.py control``: a
  plain ``Dispatcher`` whose handlers answer a message with one ``sendMessage``, and a button press with
  one ``sendMessage`` and ``answerCallbackQuery``: the same Bot API calls, in the same order, as the
  bot's answers below), a subprocess long-polling a second fake with the same delay.

Each update is pushed by a different person (the fake's queue; the next ``getUpdates`` hands the batch
over, 100 at most per call as Telegram does), and is answered when its final answer has gone back from
the fake: a ``sendMessage`` to the person's chat for a typed command, the ``answerCallbackQuery`` of the
press for a button (the bot sends or edits the message first, then answers the press). Times run from
the push to the moment the fake sent that final answer back (``Recorded.answered_at``).

The kinds of update (the issue's mix):

- ``/leads`` typed by a salesperson (their own leads), ``/lead <id>`` typed by a manager;
- the card button of the lists (``LeadCB(action=OPEN)``) pressed by a manager: the card as a new message;
- a create: the Create press at the end of ``/new``. The conversation state lives in the running bot, so
  the creating people are first driven through the real conversation (``/new``, a name, a phone, the
  source button, skip budget, skip notes, skip assignee: each step pushed once the previous one was
  answered); that is not timed. The burst's update is then their Create press, which writes the lead
  (and its history) and edits the summary into "Lead #N created". The control gets the same press and
  just answers it.

Scenarios:

1. **burst at 150 ms**: 60 people at once (15 of each kind); the time to the last answer beside the
   control's, ``--rounds`` times alternating which goes first; the ratio of the medians (target ≤ 1.5×).
2. **sustained at 150 ms**: ``--rate`` updates a second for ``--seconds`` from many people (a person
   sends again only once answered), a third of them the steps of whole ``/new`` conversations that end
   in a create, the rest reads; the answered rate (target ≥ 30/s), the lag from push to answer, and
   meanwhile ``GET /api/leads/`` to the bot's HTTP API every 200 ms with a bearer token (target: within
   50 ms), and for 5 s before the stream, with the bot idle, as a baseline.
3. **120 people at once at 300 ms** (30 of each kind): errors (an answer with the bot's ``error.internal``
   text, in either language) and updates not answered within ``--timeout`` seconds; target 0.

The run checks that the bot answered what was asked (a list, a card, "Lead #N created"; no alert), and
says how many answers were not; all processes it started are stopped at the end. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TG_BASE = 710_000_000
TEAM_SHAPE = (("admin", 2), ("rop", 8), ("mop", 90), ("seller", 40), ("finance", 10))
BURST_TARGET = 1.5  # the bot's last answer within 1.5x the control's
RATE_TARGET = 30.0  # updates answered per second, sustained
API_TARGET = 0.050  # seconds for GET /api/leads/ while the bot is busy
ANSWER_METHODS = frozenset({"sendMessage", "editMessageText", "editMessageReplyMarkup", "answerCallbackQuery"})
# The bot's generic error answer, error.internal in bot/texts (the start of it, in both languages).
ERROR_MARKS = ("Что-то пошло не так", "Something went wrong")


# ---- the control bot (a subprocess) -----------------------------------------------------------------------


def control_main(api_server: str, token: str) -> None:
    """A plain aiogram bot with no database: answers, nothing else."""
    from aiogram import Bot, Dispatcher, Router
    from aiogram.client.default import DefaultBotProperties
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.enums import ParseMode
    from aiogram.types import CallbackQuery, Message

    router = Router(name="control")

    @router.message()
    async def on_message(message: Message) -> None:
        await message.answer("ok")

    @router.callback_query()
    async def on_callback(query: CallbackQuery, bot: Bot) -> None:
        chat_id = query.message.chat.id if query.message is not None else query.from_user.id
        await bot.send_message(chat_id, "ok")
        await query.answer()

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    bot = Bot(
        token=token,
        session=AiohttpSession(api=TelegramAPIServer.from_base(api_server)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
    asyncio.run(dispatcher.start_polling(bot, handle_signals=True))


# ---- the team and the database ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Person:
    tg: int
    role: str
    first_name: str


def team() -> list[Person]:
    people = []
    n = 0
    for role, count in TEAM_SHAPE:
        for _ in range(count):
            n += 1
            people.append(Person(tg=TG_BASE + n, role=role, first_name=f"Bench{n}"))
    return people


async def seed(url: str, people: list[Person], leads: int) -> str:
    """Migrate and fill the database through the core's repositories; returns an admin's API token.

    Profiles are stored as the fake sends them (first name only, Russian), so no update has a profile
    to refresh; the units of work have no notification sink, so the seed leaves no outbox rows. The
    leads' first reminders are armed, as the reminder job would have done by now.
    """
    from bot.config import Settings
    from db.engine import open_database
    from db.enums import Role
    from db.migrate import upgrade
    from db.repositories.leads import LeadDraft
    from db.repositories.users import TelegramProfile
    from db.uow import UnitOfWorkFactory

    admins = [p.tg for p in people if p.role == "admin"]
    settings = Settings.model_validate({"database": {"url": url}, "access": {"admins": admins}})
    database = open_database(url)
    try:
        await upgrade(database.write_engine)
        factory = UnitOfWorkFactory(database, settings)
        sellers: list[int] = []
        async with factory() as uow:
            admin = None
            for person in people:
                profile = TelegramProfile(telegram_id=person.tg, first_name=person.first_name, language="ru")
                if person.role == "admin":
                    user = await uow.users.ensure_config_admin(profile)
                    admin = admin or user
                    continue
                assert admin is not None
                invite = await uow.invites.create(admin, Role(person.role))
                user = await uow.invites.accept(invite.code, profile)
                if person.role == "seller":
                    sellers.append(user.id)
            assert admin is not None
            token = await uow.tokens.issue(admin)
            await uow.commit()
        sources = settings.crm.sources
        assignees = itertools.cycle(sellers)  # every salesperson gets leads: their /leads is never empty
        for start in range(0, leads, 500):
            async with factory() as uow:
                actor = await uow.users.by_telegram_id(admins[0])
                assert actor is not None
                for i in range(start + 1, min(leads, start + 500) + 1):
                    draft = LeadDraft(
                        client_name=f"Клиент {i}",
                        phone_number=f"+99890{i:07d}",
                        source=sources[i % len(sources)],
                        budget=float(1000 * (i % 400 + 20)) if i % 3 else None,
                        assigned_to=next(assignees) if i % 10 else None,
                    )
                    await uow.leads.create(actor, draft)
                await uow.commit()
        # What the reminder job's first ticks would do (500 leads a tick, a minute apart), done now: the
        # run measures a bot that has been running, not one catching up with an import.
        while True:
            async with factory() as uow:
                armed = await uow.reminders.arm(settings.reminders.new_lead_after, limit=1000)
                await uow.commit()
            if not armed:
                break
        return token
    finally:
        await database.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, api_server: str, token: str, url: str, admins: list[int], port: int) -> Path:
    # The daily digest (and its catch-up at start, which sends once digest_time has passed today) is
    # put later today, so it cannot fire during the run and land on a person waiting for an answer.
    local = datetime.now(ZoneInfo("Asia/Tashkent"))  # [crm] timezone's default
    digest = min(local + timedelta(hours=2), local.replace(hour=23, minute=59))
    config = folder / "config.toml"
    config.write_text(
        f"""[bot]
token = "{token}"
api_server = "{api_server}"

[database]
url = "{url}"

[access]
admins = {admins}

[reminders]
digest_time = "{digest:%H:%M}"

[api]
enabled = true
host = "127.0.0.1"
port = {port}
""",
        encoding="utf-8",
    )
    return config


# ---- following the answers --------------------------------------------------------------------------------


@dataclass(eq=False)
class Flight:
    """One update on its way: pushed, and answered once its final answer went back from the fake."""

    person: Person
    kind: str
    final: str  # the method of the final answer: sendMessage or answerCallbackQuery
    callback_id: str | None
    pushed_at: float
    check: Callable[[str], bool] | None  # what the main answer (a message sent or edited) must look like
    answers: list[Any] = field(default_factory=list)
    text: str | None = None  # the main answer's text
    done_at: float | None = None

    @property
    def lag(self) -> float:
        assert self.done_at is not None
        return self.done_at - self.pushed_at

    @property
    def wrong(self) -> bool:
        """Answered, but not with what was asked for (an alert, or a text that is not the list, card...)."""
        if self.done_at is None:
            return False
        if any(r.method == "answerCallbackQuery" and r.params.get("show_alert") for r in self.answers):
            return True
        if self.check is None:
            return False
        return self.text is None or not self.check(self.text)


class Tracker:
    """Matches the requests a fake answered to the updates in flight (one per person at a time)."""

    def __init__(self, api: Any, *, checks: bool = True) -> None:
        self.api = api
        self.checks = checks  # check the answers' texts (the control answers "ok" to everything)
        self.index = 0
        self.pending: list[Any] = []
        self.by_chat: dict[int, Flight] = {}
        self.by_callback: dict[str, Flight] = {}
        self.strays: list[Any] = []  # answers that matched no update in flight
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def busy(self, person: Person) -> bool:
        return person.tg in self.by_chat

    def push(self, person: Person, kind: str, *, text: str | None = None, data: str | None = None) -> Flight:
        if person.tg in self.by_chat:
            raise RuntimeError(f"{person} already has an update in flight")
        check = CHECKS.get(kind) if self.checks else None
        if text is not None:
            self.api.push_message(person.tg, text, first_name=person.first_name)
            flight = Flight(person, kind, "sendMessage", None, time.monotonic(), check)
        else:
            assert data is not None
            update = self.api.push_callback(person.tg, data, first_name=person.first_name)
            callback_id = str(update["callback_query"]["id"])
            flight = Flight(person, kind, "answerCallbackQuery", callback_id, time.monotonic(), check)
            self.by_callback[callback_id] = flight
        self.by_chat[person.tg] = flight
        return flight

    async def _follow(self) -> None:
        while True:
            self.scan()
            await asyncio.sleep(0.005)

    def scan(self) -> None:
        requests = self.api.requests
        while self.index < len(requests):
            record = requests[self.index]
            self.index += 1
            if record.method in ANSWER_METHODS:
                self.pending.append(record)
        if not self.pending:
            return
        still = []
        for record in self.pending:
            if record.answered_at is None:
                still.append(record)
            else:
                self._route(record)
        self.pending = still

    def _route(self, record: Any) -> None:
        if record.method == "answerCallbackQuery":
            flight = self.by_callback.get(str(record.params.get("callback_query_id")))
        else:
            flight = self.by_chat.get(record.chat_id) if isinstance(record.chat_id, int) else None
        if flight is None:
            self.strays.append(record)
            return
        flight.answers.append(record)
        if record.method in ("sendMessage", "editMessageText") and flight.text is None:
            flight.text = record.text
        if record.method == flight.final:
            flight.done_at = record.answered_at
            if flight.callback_id is not None:
                self.by_callback.pop(flight.callback_id, None)
            if self.by_chat.get(flight.person.tg) is flight:
                del self.by_chat[flight.person.tg]

    async def wait(self, flights: list[Flight], timeout: float) -> None:  # noqa: ASYNC109 - a bounded wait
        deadline = time.monotonic() + timeout
        # The fake records requests in a list and signals nothing: look every 10 ms.
        while any(f.done_at is None for f in flights) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self.scan()
        # Give up on the unanswered: the person may push again, and a late answer counts as a stray.
        for flight in flights:
            if flight.done_at is None:
                if self.by_chat.get(flight.person.tg) is flight:
                    del self.by_chat[flight.person.tg]
                if flight.callback_id is not None:
                    self.by_callback.pop(flight.callback_id, None)


CHECKS: dict[str, Callable[[str], bool]] = {
    "leads": lambda t: "\n\n<b>#" in t,
    "card": lambda t: t.startswith("<b>Лид #"),
    "open": lambda t: t.startswith("<b>Лид #"),
    "create": lambda t: t.startswith("✅ Лид #"),
}


def errors_in(api: Any, since: int) -> int:
    """Requests since number ``since`` that carry the bot's generic error (``error.internal``)."""
    return sum(1 for r in api.requests[since:] if any(mark in str(r.params.get("text", "")) for mark in ERROR_MARKS))


# ---- what people send -------------------------------------------------------------------------------------


class People:
    def __init__(self, people: list[Person], leads: int, seed: int = 9) -> None:
        self.all = people
        self.mops = [p for p in people if p.role == "mop"]
        self.sellers = [p for p in people if p.role == "seller"]
        self.leads = leads
        self.rng = random.Random(seed)
        self.phones = itertools.count(1)

    def lead_id(self) -> int:
        return self.rng.randint(1, self.leads)

    def conversation(self, person: Person) -> Iterator[tuple[str, str | None, str | None]]:
        """The steps of /new up to the summary: (kind, text, callback data)."""
        from keyboards.callbacks import NewLeadAction, NewLeadCB

        n = next(self.phones)
        yield "step", "/new", None
        yield "step", f"Бенчмарк Клиент {n}", None
        yield "step", f"+99891{n:07d}", None
        yield "step", None, NewLeadCB(action=NewLeadAction.SOURCE, value=n % 6).pack()
        yield "step", None, NewLeadCB(action=NewLeadAction.SKIP_BUDGET).pack()
        yield "step", None, NewLeadCB(action=NewLeadAction.SKIP_NOTES).pack()
        yield "step", None, NewLeadCB(action=NewLeadAction.SKIP_ASSIGNEE).pack()

    @staticmethod
    def create_data() -> str:
        from keyboards.callbacks import NewLeadAction, NewLeadCB

        return NewLeadCB(action=NewLeadAction.CREATE).pack()

    def open_data(self) -> str:
        from keyboards.callbacks import LeadAction, LeadCB

        return LeadCB(action=LeadAction.OPEN, lead_id=self.lead_id()).pack()

    def burst_plan(self, each: int) -> list[tuple[Person, str]]:
        """``each`` people per kind, all different: creators, /lead and Open by managers, /leads by sellers."""
        assert 3 * each <= len(self.mops) and each <= len(self.sellers)
        plan = [(p, "create") for p in self.mops[:each]]
        plan += [(p, "card") for p in self.mops[each : 2 * each]]
        plan += [(p, "open") for p in self.mops[2 * each : 3 * each]]
        plan += [(p, "leads") for p in self.sellers[:each]]
        self.rng.shuffle(plan)
        return plan

    def push(self, tracker: Tracker, person: Person, kind: str) -> Flight:
        if kind == "leads":
            return tracker.push(person, kind, text="/leads")
        if kind == "card":
            return tracker.push(person, kind, text=f"/lead {self.lead_id()}")
        if kind == "open":
            return tracker.push(person, kind, data=self.open_data())
        if kind == "create":
            return tracker.push(person, kind, data=self.create_data())
        raise ValueError(kind)


async def drive_to_summary(tracker: Tracker, people: People, creators: list[Person], timeout: float) -> int:  # noqa: ASYNC109
    """Walk each creator through /new up to the summary, as a person would; returns the failures."""

    async def one(person: Person) -> bool:
        for _kind, text, data in people.conversation(person):
            flight = tracker.push(person, "step", text=text, data=data)
            await tracker.wait([flight], timeout)
            if flight.done_at is None:
                return False
        return True

    results = await asyncio.gather(*(one(p) for p in creators))
    return sum(1 for ok in results if not ok)


# ---- scenarios --------------------------------------------------------------------------------------------


@dataclass
class Burst:
    last: float  # seconds from the push to the last answer (inf when some were never answered)
    answered: int
    missing: int
    errors: int
    wrong: int
    size: int
    samples: list[str] = field(default_factory=list)  # a few wrong answers, to see what went wrong


async def burst(
    tracker: Tracker,
    people: People,
    plan: list[tuple[Person, str]],
    timeout: float,  # noqa: ASYNC109
) -> Burst:
    since = len(tracker.api.requests)
    await asyncio.sleep(0.2)  # the bot's getUpdates is back waiting
    flights = [people.push(tracker, person, kind) for person, kind in plan]  # one batch, one loop tick
    started = min(f.pushed_at for f in flights)
    await tracker.wait(flights, timeout)
    await asyncio.sleep(0.5)  # anything that follows the final answers (it would be an error) lands now
    tracker.scan()
    done = [f for f in flights if f.done_at is not None]
    missing = len(flights) - len(done)
    last = max(f.lag + f.pushed_at for f in done) - started if done and not missing else float("inf")
    return Burst(
        last=last,
        answered=len(done),
        missing=missing,
        errors=errors_in(tracker.api, since),
        wrong=sum(1 for f in flights if f.wrong),
        size=len(flights),
        samples=[f"{f.kind}: {f.text!r} {[r.params for r in f.answers][-1:]}"[:300] for f in flights if f.wrong][:3],
    )


@dataclass
class Sustained:
    pushed: int
    answered: int
    missing: int
    errors: int
    wrong: int
    creates: int
    push_span: float
    answered_rate: float
    lags: list[float]
    api: list[float]
    api_failed: int
    api_idle: list[float]  # the same request with the bot idle, just before the stream
    loop_lag: float  # this process's worst event-loop delay during the stream (the fake's and the sampler's loop)


async def sustained(
    tracker: Tracker,
    people: People,
    api_port: int,
    api_token: str,
    rate: float,
    seconds: float,
    timeout: float,  # noqa: ASYNC109
) -> Sustained:
    import httpx

    since = len(tracker.api.requests)
    talkers = people.mops[60:90]  # people walking through /new, one step at a time
    readers = [p for p in people.all if p not in talkers]
    scripts: dict[Person, Iterator[tuple[str, str | None, str | None]]] = {}
    flights: list[Flight] = []
    api_idle: list[float] = []
    api_latencies: list[float] = []
    samples = api_idle  # switched to api_latencies when the stream starts
    api_failed = 0
    stop_sampling = asyncio.Event()
    loop_lags: list[float] = []

    async def watch_loop() -> None:
        while not stop_sampling.is_set():
            started = time.monotonic()
            await asyncio.sleep(0.01)
            loop_lags.append(time.monotonic() - started - 0.01)

    async def sample() -> None:
        nonlocal api_failed
        headers = {"Authorization": f"Bearer {api_token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=10) as client:
            await client.get("/api/leads/")  # a connection made and the listing remembered, not measured
            while not stop_sampling.is_set():
                started = time.monotonic()
                try:
                    response = await client.get("/api/leads/")
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.monotonic() - started
                if ok:
                    samples.append(elapsed)
                else:
                    api_failed += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), max(0.0, 0.2 - elapsed))

    def next_talker() -> Flight | None:
        for person in talkers:
            if tracker.busy(person):
                continue
            script = scripts.get(person)
            if script is None:
                script = scripts[person] = people.conversation(person)
            step = next(script, None)
            if step is None:
                del scripts[person]  # the next one starts a new conversation
                return tracker.push(person, "create", data=people.create_data())
            _kind, text, data = step
            return tracker.push(person, "step", text=text, data=data)
        return None

    reader_turn = itertools.cycle(readers)
    read_kinds = itertools.cycle(["card", "open", "leads"])

    def next_reader() -> Flight | None:
        for _ in range(len(readers)):
            person = next(reader_turn)
            if tracker.busy(person):
                continue
            kind = "leads" if person.role == "seller" else next(read_kinds)
            return people.push(tracker, person, kind)
        return None

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(5.0)  # the API with the bot idle: a baseline
    samples = api_latencies
    watcher = asyncio.create_task(watch_loop())
    total = int(rate * seconds)
    start = time.monotonic()
    for k in range(total):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        flight = (next_talker() or next_reader()) if k % 3 == 0 else (next_reader() or next_talker())
        if flight is not None:
            flights.append(flight)
    push_span = time.monotonic() - start
    await tracker.wait(flights, timeout)
    stop_sampling.set()
    await sampler
    await watcher
    await asyncio.sleep(0.5)
    tracker.scan()
    # Leave nobody mid-conversation for the next scenario.
    for person in list(scripts):
        flight = tracker.push(person, "step", text="/cancel")
        await tracker.wait([flight], timeout)
    done = [f for f in flights if f.done_at is not None]
    first = min(f.pushed_at for f in flights)
    last = max(f.lag + f.pushed_at for f in done)
    return Sustained(
        pushed=len(flights),
        answered=len(done),
        missing=len(flights) - len(done),
        errors=errors_in(tracker.api, since),
        wrong=sum(1 for f in flights if f.wrong),
        creates=sum(1 for f in done if f.kind == "create" and not f.wrong),
        push_span=push_span,
        answered_rate=len(done) / (last - first),
        lags=[f.lag for f in done],
        api=api_latencies,
        api_failed=api_failed,
        api_idle=api_idle,
        loop_lag=max(loop_lags),
    )


# ---- processes --------------------------------------------------------------------------------------------


class Process:
    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        self._out = log.open("wb")
        env = dict(os.environ)
        env.pop("LEADBOT_CONFIG", None)
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    async def ready(self, api: Any, port: int | None = None, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        """Polling (a getUpdates arrived) and, with ``port``, the HTTP API answering."""
        import httpx

        deadline = time.monotonic() + timeout
        while not api.calls("getUpdates"):
            self.alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start polling within {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(0.1)
        if port is None:
            return
        async with httpx.AsyncClient() as client:
            while True:
                self.alive()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/api/health")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: the HTTP API did not answer; see {self.log}")
                await asyncio.sleep(0.1)

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # aiogram stops polling and the bot shuts down in order
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()


# ---- the run ----------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    from bench._server import is_server, recreate_schema
    from tests.fake_bot_api import FakeBotAPI
    from tests.fakes import BOT_TOKEN

    people_list = team()
    people = People(people_list, args.leads)
    admins = [p.tg for p in people_list if p.role == "admin"]
    processes: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="leadbot-latency-") as tmp:
        folder = Path(tmp)
        url = args.database_url or f"sqlite+aiosqlite:///{folder / 'leadbot.db'}"
        started = time.monotonic()
        if is_server(url):
            await recreate_schema(url)
        api_token = await seed(url, people_list, args.leads)
        print(
            f"seeded {len(people_list)} people and {args.leads:,} leads in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
        bot_api = FakeBotAPI(delay=0.15)
        control_api = FakeBotAPI(delay=0.15)
        await bot_api.start()
        await control_api.start()
        bots = Tracker(bot_api)
        control = Tracker(control_api, checks=False)
        bots.start()
        control.start()
        try:
            port = free_port()
            config = write_config(folder, bot_api.base_url, BOT_TOKEN, url, admins, port)
            leadbot = Path(sys.executable).parent / "leadbot"
            bot_proc = Process(
                "leadbot run", [str(leadbot), "run", "--config", str(config)], folder, folder / "bot.log"
            )
            processes.append(bot_proc)
            control_proc = Process(
                "control bot",
                [sys.executable, str(HERE), "control", control_api.base_url, BOT_TOKEN],
                folder,
                folder / "control.log",
            )
            processes.append(control_proc)
            await asyncio.gather(bot_proc.ready(bot_api, port), control_proc.ready(control_api))
            print("both bots are polling", file=sys.stderr)

            # Warm-up (not measured): every kind once or twice through both.
            plan = people.burst_plan(3)
            if await drive_to_summary(bots, people, [p for p, k in plan if k == "create"], args.timeout):
                print("warm-up: a /new conversation was not answered", file=sys.stderr)
                return 1
            for tracker in (control, bots):
                warm = await burst(tracker, people, plan, args.timeout)
                if warm.missing or warm.errors or warm.wrong:
                    print(f"warm-up went wrong: {warm}; see {folder}", file=sys.stderr)
                    bot_proc.alive()
                    return 1

            # 1. 60 people at once, 150 ms.
            results: dict[str, list[Burst]] = {"control": [], "bot": []}
            for round_no in range(args.rounds):
                plan = people.burst_plan(15)
                creators = [p for p, k in plan if k == "create"]
                failed = await drive_to_summary(bots, people, creators, args.timeout)
                if failed:
                    print(f"round {round_no + 1}: {failed} /new conversations not answered", file=sys.stderr)
                order = [("control", control), ("bot", bots)]
                if round_no % 2:
                    order.reverse()
                for name, tracker in order:
                    results[name].append(await burst(tracker, people, plan, args.timeout))
                print(
                    f"burst round {round_no + 1}/{args.rounds}: control {results['control'][-1].last:.3f} s,"
                    f" bot {results['bot'][-1].last:.3f} s",
                    file=sys.stderr,
                )

            # 2. Sustained, 150 ms, the HTTP API sampled meanwhile.
            steady = await sustained(bots, people, port, api_token, args.rate, args.seconds, args.timeout)
            print(f"sustained: {steady.answered} answered at {steady.answered_rate:.1f}/s", file=sys.stderr)

            # 3. 120 people at once, 300 ms.
            bot_api.delay = control_api.delay = 0.30
            plan = people.burst_plan(30)
            creators = [p for p, k in plan if k == "create"]
            prep_failed = await drive_to_summary(bots, people, creators, args.timeout)
            wide: dict[str, Burst] = {}
            for name, tracker in (("control", control), ("bot", bots)):
                wide[name] = await burst(tracker, people, plan, args.timeout)
            bot_proc.alive()
            control_proc.alive()
        finally:
            for process in processes:
                process.stop()
            await bots.stop()
            await control.stop()
            await bot_api.stop()
            await control_api.stop()
        log_tail = (folder / "bot.log").read_text(errors="replace")
        tracebacks = log_tail.count("Traceback")

    for record in bots.strays[:5]:
        print(f"an answer to nobody in flight: {record.method} {record.chat_id} {record.text[:80]!r}", file=sys.stderr)
    report(args, results, steady, wide, prep_failed, len(bots.strays), tracebacks)
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def report(
    args: argparse.Namespace,
    results: dict[str, list[Burst]],
    steady: Sustained,
    wide: dict[str, Burst],
    prep_failed: int,
    strays: int,
    tracebacks: int,
) -> None:
    """A Markdown table (it goes into docs/benchmarks.md as it is)."""

    def ms(seconds: float) -> str:
        return "never" if seconds == float("inf") else f"{seconds * 1000:,.0f} ms"

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def row(*cells: str) -> None:
        print("| " + " | ".join(cells) + " |")

    bursts, controls = results["bot"], results["control"]
    control = statistics.median(b.last for b in controls)
    bot = statistics.median(b.last for b in bursts)
    ratio = bot / control
    missing = sum(b.missing for b in bursts)
    ratios = ", ".join(f"{b.last / c.last:.2f}×" for b, c in zip(bursts, controls, strict=True))
    lags = steady.lags
    api = steady.api
    over = sum(1 for x in api if x > API_TARGET)
    w_control, w_bot = wide["control"], wide["bot"]
    bad = w_bot.errors + w_bot.missing
    print()
    print(
        f"LeadBot latency benchmark · {args.leads:,} leads, 150 people"
        f" · {'PostgreSQL' if args.database_url else 'SQLite'} · Python {platform.python_version()}"
        f" · {platform.machine()} · {os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.2f} at the end"
    )
    print()
    row("figure", "control (aiogram, no database)", "`leadbot run`", "target", "met")
    row("---", "---:", "---:", "---", "---")
    row(
        f"60 people at once, 150 ms: last answer, median of {len(bursts)}",
        ms(control),
        f"{ms(bot)} = **{ratio:.2f}×**",
        "≤ 1.5× the control",
        met(ratio <= BURST_TARGET and not missing),
    )
    row(
        "… each round",
        ", ".join(ms(b.last) for b in controls),
        f"{', '.join(ms(b.last) for b in bursts)} ({ratios})",
        "",
        "",
    )
    row(
        "… errors / wrong answers / unanswered",
        "",
        f"{sum(b.errors for b in bursts)} / {sum(b.wrong for b in bursts)} / {missing}",
        "0",
        met(not any(b.errors or b.wrong or b.missing for b in bursts)),
    )
    row(
        f"sustained, {args.rate:g}/s offered for {args.seconds:g} s, 150 ms: answered",
        "",
        f"**{steady.answered_rate:.1f}/s** ({steady.answered} of {steady.pushed}, {steady.creates} creates)",
        "≥ 30/s",
        met(steady.answered_rate >= RATE_TARGET and not steady.missing),
    )
    row(
        "… lag from push to answer, p50 / p95 / max",
        "",
        f"{pct(lags, 0.5) * 1000:.0f} / {pct(lags, 0.95) * 1000:.0f} / {max(lags) * 1000:.0f} ms",
        "",
        "",
    )
    row(
        "… errors / wrong answers / unanswered",
        "",
        f"{steady.errors} / {steady.wrong} / {steady.missing}",
        "0",
        met(not (steady.errors or steady.wrong or steady.missing)),
    )
    row(
        f"… `GET /api/leads/` meanwhile, every 200 ms ({len(api)}): p50 / p95 / max",
        "",
        f"**{pct(api, 0.5) * 1000:.1f} / {pct(api, 0.95) * 1000:.1f} / {max(api) * 1000:.1f} ms**"
        f" ({over} over 50 ms, {steady.api_failed} failed)",
        "≤ 50 ms",
        met(max(api) <= API_TARGET and not steady.api_failed),
    )
    idle = steady.api_idle
    row(
        f"… the same with the bot idle, just before ({len(idle)}): p50 / p95 / max",
        "",
        f"{pct(idle, 0.5) * 1000:.1f} / {pct(idle, 0.95) * 1000:.1f} / {max(idle) * 1000:.1f} ms",
        "",
        "",
    )
    row(
        "120 people at once, 300 ms: last answer",
        ms(w_control.last),
        f"{ms(w_bot.last)} ({w_bot.last / w_control.last:.2f}×)",
        "",
        "",
    )
    row(
        "… errors + unanswered (of 120)",
        f"{w_control.errors} + {w_control.missing}",
        f"**{w_bot.errors} + {w_bot.missing}** (wrong answers: {w_bot.wrong})",
        "0",
        met(bad == 0),
    )
    print()
    print(
        f"/new conversations that did not reach the summary before the 300 ms burst: {prep_failed};"
        f" answers to nobody in flight: {strays}; tracebacks in the bot's log: {tracebacks};"
        f" worst event-loop delay of this process (the fake Bot API, the sampler) during the stream:"
        f" {steady.loop_lag * 1000:.0f} ms"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=5000, help="leads in the database (default 5,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 60-people burst (default 3)")
    parser.add_argument("--rate", type=float, default=35.0, help="updates a second offered, sustained (default 35)")
    parser.add_argument("--seconds", type=float, default=25.0, help="length of the sustained run (default 25)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds an update may take to be answered")
    parser.add_argument(
        "--database-url",
        default=None,
        help="the bot's database (default: a fresh SQLite file in a temp folder); a postgresql+asyncpg:// URL names"
        " a database the benchmark owns: its public schema is dropped and built again by the migrations",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "control":
        control_main(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(asyncio.run(main(parse_args())))
