"""Bot dispatch benchmark: the production dispatcher on a database of 1,000,000 leads.

Run from the repository root::

    .venv/bin/python bench/bench_bot.py            # --rounds 5 --updates 400 --bursts 9 --rebuild --bound
    .venv/bin/python bench/bench_bot.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench

With ``--database-url postgresql+asyncpg://…`` the same million leads go into that PostgreSQL database,
which the benchmark owns (its ``public`` schema is dropped and made again by the real migrations, the rows
loaded by binary COPY; ``bench/_data.server_database``). The run writes to it (the creates), so the next
run builds it again; on SQLite each run works on a private copy of a cached file.

What it measures (issue 2, point 10). Real ``Update`` objects go through ``dispatcher.feed_update``
of the dispatcher ``bot.factory.create_dispatcher`` builds for the running bot (middlewares, routers,
a short read or write unit of work per update, committed before any Bot API call, the notification
outbox), over ``db.engine.open_database`` (one writer, a pool of readers), with a fake Bot API session
that answers like Telegram, instantly, and records nothing:

- ``card /lead``: ``/lead <id>`` typed by a viewer (admin, head of sales, sales manager, financier);
- ``card open``: the lists' Open button (``LeadCB(action=OPEN)``), by the same people;
- ``list first``: ``/leads`` typed by anyone on the team (salespeople get only their own leads);
- ``list deep``: the list's "Older »" button (``LeadListCB(action=OLDER)``) with a cursor near the old
  end of the table (ids 1,000–20,000 of 1,000,000), as the list's own keyboard would carry it;
- ``create``: the Create press on the /new summary; each iteration presets the FSM state (the
  summary step) and a draft with a fresh phone through the dispatcher's storage, so every press
  creates a lead (history rows and outbox notification included). The preset is not timed.

Each scenario's updates/s is set beside aiogram's own no-op dispatch rate measured in the same run: a
bare ``Dispatcher`` with one router whose handler does nothing, fed the same kind of update (a message
or a callback query). In every round, blocks of 25 no-op updates and 25 of the scenario alternate, and
the round's ratio is the scenario's rate over the floor's rate in that same stretch of time; the ratio
reported is the median over rounds, which cancels most of the noise of a shared machine. p99 is over
all measured updates of all rounds.

The burst feeds 100 mixed updates at once (``asyncio.gather`` of ``feed_update``): 32 card opens, 30
first pages, 30 deep pages and 8 creates by 8 different people; its wall time is reported as the
median (and the worst) of several bursts.

What the floor includes: the updates are built without the bot, so ``feed_update`` first binds each
one by dumping and validating it again — in the floor and the scenarios alike. That round trip stands
in for parsing the update's JSON, which long polling does before ``feed_update``, and it is most of the
no-op dispatch. ``--bound`` feeds updates bound to the bot beforehand (as polling hands them over),
which leaves it out of both: the floor is then about three times faster and every ratio smaller.

Targets (issue 9's guard): reads ≥ 10 % of the no-op rate, create ≥ 6 %; the burst ≤ 0.3 s (issue 2).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.fsm.context import FSMContext  # noqa: E402
from aiogram.fsm.storage.base import StorageKey  # noqa: E402
from aiogram.methods import AnswerCallbackQuery, EditMessageText, SendMessage, TelegramMethod  # noqa: E402
from aiogram.methods.base import TelegramType  # noqa: E402
from aiogram.types import CallbackQuery, Message, Update  # noqa: E402
from aiogram.types import User as TgUser  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench._data import TEAM, BenchData, cached_database, fresh_copy, server_database, written_to  # noqa: E402
from bot.cli import freeze_startup_objects, keep_on_one_core  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.factory import create_dispatcher  # noqa: E402
from db.engine import Database, open_database  # noqa: E402
from db.enums import Role  # noqa: E402
from db.models import Lead  # noqa: E402
from db.settings import DEFAULT_SOURCES  # noqa: E402
from handlers.new_lead import NewLead, NewLeadDraft  # noqa: E402
from keyboards.callbacks import LeadAction, LeadCB, LeadListAction, LeadListCB, NewLeadAction, NewLeadCB  # noqa: E402
from tests.fakes import RecordingSession, UpdateFactory, make_bot  # noqa: E402

READ_TARGET = 0.10
CREATE_TARGET = 0.06
BURST_TARGET = 0.3
BURST_SIZE = 100
BLOCK = 25  # updates per alternating block of the floor and a scenario

VIEWERS = (Role.ADMIN, Role.ROP, Role.MOP, Role.FINANCE)
CREATORS = (Role.ADMIN, Role.ROP, Role.MOP)


class NullSession(RecordingSession):
    """Answers every Bot API call like Telegram would, keeping only counters and the last call.

    Memory stays flat however many updates run; the counters and the last message let the benchmark
    check that it measured the intended path (a card, a list, a created lead), not an error answer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.alerts = 0
        self.alert_texts: list[str] = []
        self.last_message: SendMessage | EditMessageText | None = None

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - BaseSession's signature
    ) -> TelegramType:
        self.calls += 1
        if isinstance(method, SendMessage | EditMessageText):
            self.last_message = method
        if isinstance(method, AnswerCallbackQuery) and method.show_alert:
            self.alerts += 1
            self.alert_texts.append(method.text or "")
        answer: TelegramType = self._answer(method)
        return answer

    def last_text(self, chat_id: int | None = None) -> str:
        return (self.last_message.text or "") if self.last_message is not None else ""


@dataclass
class Scenario:
    name: str
    kind: str  # "message" or "callback": which no-op floor it is compared with
    target: float
    make: Callable[[int], Awaitable[Update]]  # builds (and prepares) the i-th update; not timed
    check: Callable[[str], bool]  # the text the bot answered with, for a sanity check


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Bench:
    def __init__(
        self, data: BenchData, settings: Settings, dispatcher: Dispatcher, bot: Bot, *, bound: bool = False
    ) -> None:
        self.data = data
        self.settings = settings
        self.dispatcher = dispatcher
        self.bot = bot
        self.bound = bound
        self.updates = UpdateFactory()
        self.rng = random.Random(7)
        self.phones = itertools.count(1)
        self.tg: dict[int, TgUser] = {}
        for user_id, (_role, first, last) in enumerate(TEAM, start=1):
            telegram_id = data.telegram_id(user_id)
            # The same names as in the database: the profile touch then has nothing to write.
            self.tg[user_id] = TgUser(
                id=telegram_id,
                is_bot=False,
                first_name=first,
                last_name=last,
                username=f"bench_{user_id}",
                language_code="ru",
            )
        self.viewers = data.users(*VIEWERS)
        self.creators = data.users(*CREATORS)
        self.everyone = [user_id for user_id, _ in data.team]

    # ---- updates --------------------------------------------------------------------------------------

    def _pick(self, users: list[int], i: int) -> TgUser:
        return self.tg[users[i % len(users)]]

    def _hot(self, i: int) -> int:
        return self.data.hot[(i * 37) % len(self.data.hot)]

    async def card_command(self, i: int) -> Update:
        return self.updates.message(self._pick(self.viewers, i), f"/lead {self._hot(i)}")

    async def card_open(self, i: int) -> Update:
        return self.updates.callback(self._pick(self.viewers, i), LeadCB(action=LeadAction.OPEN, lead_id=self._hot(i)))

    async def list_first(self, i: int) -> Update:
        return self.updates.message(self._pick(self.everyone, i), "/leads")

    async def list_deep(self, i: int) -> Update:
        cursor = 1_000 + (i * 7_919) % 19_000
        page = max(2, (self.data.leads - cursor) // self.settings.crm.page_size)
        data = LeadListCB(action=LeadListAction.OLDER, page=page, cursor=cursor)
        return self.updates.callback(self._pick(self.everyone, i), data)

    async def create(self, i: int, user: TgUser | None = None) -> Update:
        user = user or self._pick(self.creators, i)
        await self.preset_summary(user)
        return self.updates.callback(user, NewLeadCB(action=NewLeadAction.CREATE))

    async def preset_summary(self, user: TgUser) -> None:
        """Put ``user`` at the /new summary with a complete draft, as the conversation would leave it."""
        key = StorageKey(bot_id=self.bot.id, chat_id=user.id, user_id=user.id)
        state = FSMContext(storage=self.dispatcher.storage, key=key)
        n = next(self.phones)
        sellers = self.data.users(Role.SELLER)
        draft = NewLeadDraft(
            client_name=f"Бенчмарк <Клиент> {n}",
            phone_number=f"+99891{n:07d}",
            source=DEFAULT_SOURCES[n % len(DEFAULT_SOURCES)],
            budget=float(50_000 + n),
            notes="Создан бенчмарком" if n % 2 else None,
            assigned_to=sellers[n % len(sellers)] if n % 5 else None,
        )
        await state.set_state(NewLead.confirm)
        await state.set_data({"draft": draft.model_dump(mode="json")})

    def scenarios(self) -> list[Scenario]:
        return [
            Scenario("card /lead", "message", READ_TARGET, self.card_command, lambda t: t.startswith("<b>Лид #")),
            Scenario("card open", "callback", READ_TARGET, self.card_open, lambda t: t.startswith("<b>Лид #")),
            Scenario("list first", "message", READ_TARGET, self.list_first, lambda t: "\n\n<b>#" in t),
            Scenario("list deep", "callback", READ_TARGET, self.list_deep, lambda t: "\n\n<b>#" in t),
            Scenario("create", "callback", CREATE_TARGET, self.create, lambda t: t.startswith("✅ Лид #")),
        ]

    # ---- measuring ----------------------------------------------------------------------------------

    def prepare(self, update: Update) -> Update:
        """With ``--bound``, the update as long polling hands it over: parsed already, bound to the bot.

        ``feed_update`` of an update built without the bot first binds it by a round trip through a dict
        (dump and validate again), for the floor and the scenario alike; that stands in for parsing the
        update's JSON, which polling does before ``feed_update``. ``--bound`` leaves it out of both.
        """
        if not self.bound:
            return update
        return Update.model_validate(update.model_dump(), context={"bot": self.bot})

    async def run(
        self,
        dispatcher: Dispatcher,
        make: Callable[[int], Awaitable[Update]],
        n: int,
        *,
        start: int = 0,
        collect: bool = True,
    ) -> list[float]:
        latencies: list[float] = []
        feed = dispatcher.feed_update
        bot = self.bot
        if collect:
            gc.collect()
        for i in range(start, start + n):
            update = self.prepare(await make(i))
            started = time.perf_counter()
            await feed(bot, update)
            latencies.append(time.perf_counter() - started)
        return latencies

    async def burst(self) -> float:
        """Wall time of 100 mixed updates fed at once.

        The typed commands come from people who are not in the middle of /new: a command typed
        mid-conversation abandons it (by design), which would turn their Create press into an error.
        """
        updates: list[Update] = []
        for i, user_id in enumerate(self.creators[:8]):
            updates.append(await self.create(i, self.tg[user_id]))
        others = [user_id for user_id in self.everyone if user_id not in self.creators[:8]]
        finance = self.data.users(Role.FINANCE)
        for _ in range(16):
            i = self.rng.randrange(10_000)
            updates.append(self.updates.message(self._pick(finance, i), f"/lead {self._hot(i)}"))
            updates.append(await self.card_open(self.rng.randrange(10_000)))
        for _ in range(30):
            updates.append(self.updates.message(self._pick(others, self.rng.randrange(100)), "/leads"))
            updates.append(await self.list_deep(self.rng.randrange(10_000)))
        self.rng.shuffle(updates)
        assert len(updates) == BURST_SIZE
        updates = [self.prepare(update) for update in updates]
        feed = self.dispatcher.feed_update
        gc.collect()
        started = time.perf_counter()
        await asyncio.gather(*(feed(self.bot, update) for update in updates))
        return time.perf_counter() - started


def noop_dispatcher() -> Dispatcher:
    """aiogram's floor: one router, one handler per update kind, each doing nothing."""

    async def on_message(message: Message) -> None:
        return None

    async def on_callback(query: CallbackQuery) -> None:
        return None

    router = Router(name="noop")
    router.message.register(on_message)
    router.callback_query.register(on_callback)
    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    return dispatcher


async def count_leads(database: Database) -> int:
    async with database.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(Lead)) or 0)


async def main(args: argparse.Namespace, data: BenchData) -> int:
    with tempfile.TemporaryDirectory(prefix="leadbot-bench-") as tmp:
        if data.path is None:
            await written_to(data)
            copy = data
        else:
            copy = fresh_copy(data, Path(tmp))
        settings = Settings.model_validate({"bot": {"token": "42:TEST-TOKEN"}, "database": {"url": copy.url}})
        database = open_database(settings.database.url)
        session = NullSession()
        bot = make_bot(session)
        dispatcher = create_dispatcher(settings, database)
        bench = Bench(copy, settings, dispatcher, bot, bound=args.bound)
        noop = noop_dispatcher()
        freeze_startup_objects()  # as `leadbot run` does once its dispatcher is built
        noop_make: dict[str, Callable[[int], Awaitable[Update]]] = {
            "message": bench.card_command,
            "callback": bench.card_open,
        }
        try:
            leads_before = await count_leads(database)
            scenarios = bench.scenarios()
            # Warm-up: caches, compiled statements, SQLite pages; then a check that each path is the right one.
            for scenario in scenarios:
                await bench.run(dispatcher, scenario.make, args.warmup)
                text = session.last_text()
                if session.alerts or not scenario.check(text):
                    print(f"{scenario.name}: unexpected answer ({session.alerts} alerts): {text[:300]!r}")
                    return 1
            for make in noop_make.values():
                await bench.run(noop, make, args.warmup)

            floors: dict[str, Result] = {kind: Result() for kind in noop_make}
            results: dict[str, Result] = {scenario.name: Result() for scenario in scenarios}
            for round_no in range(args.rounds):
                for scenario in scenarios:
                    # Blocks of the floor and of the scenario alternate, so both rates come from the same
                    # stretch of time on a machine whose speed wanders.
                    floor_latencies: list[float] = []
                    latencies = []
                    gc.collect()
                    for start in range(0, args.updates, BLOCK):
                        n = min(BLOCK, args.updates - start)
                        offset = round_no * args.updates + start
                        floor_make = noop_make[scenario.kind]
                        floor_latencies += await bench.run(noop, floor_make, n, start=offset, collect=False)
                        latencies += await bench.run(dispatcher, scenario.make, n, start=offset, collect=False)
                    floor_rate = len(floor_latencies) / sum(floor_latencies)
                    rate = len(latencies) / sum(latencies)
                    floors[scenario.kind].rates.append(floor_rate)
                    floors[scenario.kind].latencies += floor_latencies
                    result = results[scenario.name]
                    result.rates.append(rate)
                    result.ratios.append(rate / floor_rate)
                    result.latencies += latencies
                print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)

            bursts = [await bench.burst() for _ in range(args.bursts)]
            if session.alerts:
                print(f"{session.alerts} alert answers during the benchmark: {session.alert_texts[:3]}")
                return 1
            created = await count_leads(database) - leads_before
            expected_creates = (args.warmup + args.updates * args.rounds) + 8 * args.bursts
            if created != expected_creates:
                print(f"created {created} leads, expected {expected_creates}")
                return 1
        finally:
            await database.dispose()
            await bot.session.close()

    report(args, data, floors, results, scenarios, bursts)
    return 0


def report(
    args: argparse.Namespace,
    data: BenchData,
    floors: dict[str, Result],
    results: dict[str, Result],
    scenarios: list[Scenario],
    bursts: list[float],
) -> None:
    print()
    print(
        f"LeadBot dispatch benchmark · {data.leads:,} leads on {'SQLite' if data.path else 'PostgreSQL'}"
        f" · {args.rounds} rounds × {args.updates} updates"
        f" · updates {'bound to the bot (--bound)' if args.bound else 'built without the bot'}"
        f" · {'every core (--any-core)' if args.any_core or not data.path else 'one core, as leadbot run'}"
        f" · Python {platform.python_version()} · {platform.machine()}"
    )
    print()
    header = f"{'scenario':<12} {'ratio':>7} {'target':>7} {'upd/s':>8} {'p99 ms':>8}  met"
    print(header)
    print("-" * len(header))
    for kind, floor in floors.items():
        rate = statistics.median(floor.rates)
        print(f"{'noop ' + kind[:3]:<12} {'1.000':>7} {'':>7} {rate:>8.0f} {p99(floor.latencies) * 1000:>8.3f}")
    all_met = True
    for scenario in scenarios:
        result = results[scenario.name]
        ratio = statistics.median(result.ratios)
        met = ratio >= scenario.target
        all_met &= met
        print(
            f"{scenario.name:<12} {ratio:>7.3f} {scenario.target:>7.2f} {statistics.median(result.rates):>8.0f}"
            f" {p99(result.latencies) * 1000:>8.3f}  {'yes' if met else 'NO'}"
        )
    burst = statistics.median(bursts)
    met = burst <= BURST_TARGET
    all_met &= met
    print()
    print(
        f"burst of {BURST_SIZE} mixed updates: median {burst * 1000:.0f} ms, best {min(bursts) * 1000:.0f} ms,"
        f" worst {max(bursts) * 1000:.0f} ms over {len(bursts)} bursts (target ≤ {BURST_TARGET * 1000:.0f} ms):"
        f" {'yes' if met else 'NO'}"
    )
    print("ratios per round:", {name: [round(r, 3) for r in res.ratios] for name, res in results.items()})
    print("all targets met" if all_met else "some targets NOT met")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=1_000_000, help="leads in the database (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each measuring the floor and every scenario")
    parser.add_argument("--updates", type=int, default=400, help="updates per scenario per round")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured updates per scenario first")
    parser.add_argument("--bursts", type=int, default=9, help="bursts of 100 mixed updates")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: a private copy of the cached SQLite file; a postgresql+asyncpg:// URL names a database the"
        " benchmark owns: its public schema is dropped and built again",
    )
    parser.add_argument(
        "--any-core",
        action="store_true",
        help="let the process use every core, as [database] one_core = false does (default: as leadbot run)",
    )
    parser.add_argument(
        "--bound",
        action="store_true",
        help="feed updates already bound to the bot, as polling does (no dump-and-validate in feed_update)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    # Built (or found in the cache) before the event loop starts: building runs its own loop.
    if arguments.database_url:
        database = server_database(arguments.database_url, arguments.leads, rebuild=arguments.rebuild)
    else:
        database = cached_database(arguments.leads, rebuild=arguments.rebuild)
    # As `leadbot run` starts (bot.cli): on SQLite its threads share one core ([database] one_core, unless
    # --any-core); what start-up built is left out of the garbage collector once built (main); uvloop.
    if not arguments.any_core:
        keep_on_one_core(Settings.model_validate({"database": {"url": database.url}}))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(main(arguments, database)))
