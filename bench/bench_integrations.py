"""CRM sync benchmark: 1,000 lead changes through the real queue, worker and adapter to each fake CRM.

For each of amoCRM, Bitrix24 and Meta's Conversions API, in a fresh, migrated SQLite file: the changes are
made through units of work from ``bot.factory.create_uow_factory`` (so the real sink queues them), then
the worker ``bot.integrations.create_sync_workers`` builds (the production adapter and settings' defaults)
empties the queue over HTTP into the fake, which runs in a thread of its own on 127.0.0.1 (another
machine, as the CRM is) and holds to the CRM's limits:

- amoCRM (``tests/fake_amocrm.py``): at most 7 requests in any second, 429 past it; our ``rate`` is 6/s;
- Bitrix24 (``tests/fake_bitrix24.py``): a leaky bucket 50 deep draining 2 a second, 503
  QUERY_LIMIT_EXCEEDED past it; our ``rate`` is 2/s (3 at once after idling);
- Meta (``tests/fake_graph.py``): the events edge; Meta publishes no per-second limit for it and the fake
  enforces none here; our ``capi_rate`` is 5/s.

The worker takes one job per lead per round (a lead's changes go in order), up to a batch (50 for amo's
batch calls and Bitrix24's ``batch``, 1,000 events for Meta), so the changes come in two shapes: 1,000
leads with one change each (their creates; for Meta, their first stage), and 200 leads with five changes
each (amo, Bitrix24: create, в работе, a budget, a comment, закрыт; Meta: the stages новый, в работе,
закрыт, в работе again, закрыт).

Reported per run: requests, the rate achieved at the fake (first to last arrival) against our configured
rate (target ≥ 0.90) and against the CRM's limit, the limit errors the fake answered (target 0), the most
requests in any second (amo, ≤ 7) or the fullest the bucket got (Bitrix24, ≤ 50), wall time and changes a
second, and that every change arrived (every job done, every lead and event there).

    python bench/bench_integrations.py [--quick] [--changes 1000] [--only amocrm,bitrix24,meta]

The full run takes about a minute; ``--quick`` (200 changes) a few seconds. Figures go to
docs/benchmarks.md ("CRM sync").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import MetaSection, Settings  # noqa: E402
from bot.factory import create_uow_factory  # noqa: E402
from bot.integrations import create_sync_workers  # noqa: E402
from db.engine import open_database  # noqa: E402
from db.enums import LeadStatus, Role  # noqa: E402
from db.integrations import AMOCRM, BITRIX24, META  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import MetaLeadgen, User  # noqa: E402
from db.repositories import LeadDraft  # noqa: E402
from db.repositories.leads import LeadChanges  # noqa: E402
from db.uow import UnitOfWork, UnitOfWorkFactory  # noqa: E402
from integrations.amocrm import AmoCrmSection  # noqa: E402
from integrations.bitrix24 import Bitrix24Section  # noqa: E402
from tests.fake_amocrm import ACCESS_TOKEN, FakeAmoCrm  # noqa: E402
from tests.fake_bitrix24 import FakeBitrix24  # noqa: E402
from tests.fake_bot_api import max_per_window  # noqa: E402
from tests.fake_graph import CAPI_TOKEN, PIXEL_ID, FakeGraph  # noqa: E402

TARGETS = (AMOCRM, BITRIX24, META)
PER_LEAD = (1, 5)  # the two shapes: changes per lead
UNIT = 100  # changes made per unit of work while filling the queue
TARGET_RATIO = 0.90
LEADGEN_BASE = 900_000_000_000_000  # Meta's lead ids are numbers

_Fake = TypeVar("_Fake", FakeAmoCrm, FakeBitrix24, FakeGraph)


class ServerThread:
    """A fake CRM in a thread and event loop of its own: its work does not slow the worker's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.fake: Any = None

    def start(self, make: Callable[[], _Fake]) -> _Fake:
        self.thread.start()

        async def boot() -> _Fake:
            return await make().__aenter__()

        fake = asyncio.run_coroutine_threadsafe(boot(), self.loop).result()
        self.fake = fake
        return fake

    def stop(self) -> None:
        if self.fake is not None:
            asyncio.run_coroutine_threadsafe(self.fake.__aexit__(None, None, None), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass
class Result:
    target: str
    leads: int
    per_lead: int
    jobs: int
    done: int
    failed: int
    arrived: bool  # every lead (and event) is there
    requests: int
    elapsed: float  # the worker, from its start until the queue was empty
    achieved: float  # requests a second at the fake, first to last arrival
    sustained: float  # the same once our limiter's burst is spent (Bitrix24's lets 3 go at once after idling)
    configured: float
    remote_limit: float | None
    limit_errors: int
    peak: float | None  # amo: most requests in any second; Bitrix24: the bucket's fullest

    @property
    def ratio(self) -> float:
        return self.sustained / self.configured

    @property
    def paced(self) -> bool:
        """Whether the rate says anything: enough requests, timed at the fake (Meta's are not)."""
        return self.requests >= 5 and self.sustained > 0

    @property
    def ok(self) -> bool:
        paced = self.ratio >= TARGET_RATIO or not self.paced
        return paced and self.limit_errors == 0 and self.failed == 0 and self.done == self.jobs and self.arrived


def bucket_peak(stamps: list[float], drain: float) -> float:
    """The fullest a leaky bucket draining ``drain`` a second gets with one drop per arrival."""
    level, last, peak = 0.0, None, 0.0
    for stamp in stamps:
        if last is not None:
            level = max(0.0, level - (stamp - last) * drain)
        level += 1
        last = stamp
        peak = max(peak, level)
    return peak


def spent(stamps: list[float], configured: float) -> int:
    """Where the limiter's burst ends: the first request spaced (nearly) as the configured rate spaces them."""
    for index, (before, after) in enumerate(itertools.pairwise(stamps)):
        if after - before >= 0.9 / configured:
            return index
    return 0


def rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0


# ---- the database ------------------------------------------------------------------------------------


async def migrated(path: Path) -> None:
    database = open_database(f"sqlite+aiosqlite:///{path}")
    await upgrade(database.write_engine)
    await database.dispose()


async def team(factory: UnitOfWorkFactory) -> tuple[User, User]:
    """The admin who makes the changes, and the salesperson the leads are assigned to."""
    async with factory() as uow:
        admin = User(telegram_id=1001, role=Role.ADMIN, first_name="Админ")
        seller = User(telegram_id=1004, role=Role.SELLER, first_name="Продажник")
        uow.session.add_all([admin, seller])
        await uow.commit()
    return admin, seller


Change = Callable[[UnitOfWork, int, int], Awaitable[object]]


def changes_for(target: str, admin: User) -> list[Change]:
    """A lead's changes after its create, in order (the first ``per_lead - 1`` of them are made)."""
    if target == META:
        statuses = [LeadStatus.IN_WORK, LeadStatus.CLOSED, LeadStatus.IN_WORK, LeadStatus.CLOSED]
        return [
            lambda uow, lead_id, _n, status=status: uow.leads.change_status(admin, lead_id, status)
            for status in statuses
        ]
    return [
        lambda uow, lead_id, _n: uow.leads.change_status(admin, lead_id, LeadStatus.IN_WORK),
        lambda uow, lead_id, n: uow.leads.update(admin, lead_id, LeadChanges(budget=10_000 + n)),
        lambda uow, lead_id, n: uow.leads.add_comment(admin, lead_id, f"Созвонились, клиент {n}"),
        lambda uow, lead_id, _n: uow.leads.change_status(admin, lead_id, LeadStatus.CLOSED),
    ]


async def fill(factory: UnitOfWorkFactory, target: str, leads: int, per_lead: int) -> None:
    """The leads and their changes, ``UNIT`` to a unit of work, one change of every lead before the next."""
    admin, seller = await team(factory)
    ids: list[int] = []
    for start in range(0, leads, UNIT):
        async with factory() as uow:
            for n in range(start, min(start + UNIT, leads)):
                draft = LeadDraft(f"Клиент {n}", f"+99890{n:07d}", "Instagram", budget=5_000, assigned_to=seller.id)
                if target == META:
                    # From a Meta form: its row, written with the lead so the first stage is queued too.
                    lead_id, _ = await uow.leads.add(admin, draft)
                    uow.session.add(MetaLeadgen(leadgen_id=str(LEADGEN_BASE + n), lead_id=lead_id, status="done"))
                else:
                    lead_id = (await uow.leads.create(admin, draft)).id
                ids.append(lead_id)
            await uow.commit()
    for change in changes_for(target, admin)[: per_lead - 1]:
        for start in range(0, leads, UNIT):
            async with factory() as uow:
                for n in range(start, min(start + UNIT, leads)):
                    await change(uow, ids[n], n)
                await uow.commit()


# ---- one run -------------------------------------------------------------------------------------------


def configure(base: Settings, target: str, fake: Any) -> Settings:
    if target == AMOCRM:
        section = AmoCrmSection(base_url=fake.base_url, long_lived_token=ACCESS_TOKEN)
        return base.model_copy(update={"amocrm": section})
    if target == BITRIX24:
        return base.model_copy(update={"bitrix24": Bitrix24Section(webhook_url=fake.webhook_url)})
    meta = MetaSection(graph_url=fake.base_url, pixel_id=PIXEL_ID, capi_access_token=CAPI_TOKEN)
    return base.model_copy(update={"meta": meta})


def make_fake(target: str) -> Callable[[], Any]:
    return {AMOCRM: FakeAmoCrm, BITRIX24: FakeBitrix24, META: FakeGraph}[target]


async def run(template: Path, target: str, leads: int, per_lead: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        shutil.copyfile(template, path)
        url = f"sqlite+aiosqlite:///{path}"
        database = open_database(url)
        server = ServerThread()
        fake = server.start(make_fake(target))
        try:
            base = Settings.model_validate({"bot": {"token": "42:BENCH"}, "database": {"url": url}})
            settings = configure(base, target, fake)
            factory = create_uow_factory(settings, database)
            await fill(factory, target, leads, per_lead)
            [worker] = create_sync_workers(settings, factory)
            started = time.monotonic()
            try:
                await worker.run(until_idle=True)
            finally:
                await worker.adapter.aclose()
            elapsed = time.monotonic() - started
            async with factory(read_only=True) as uow:
                overview = await uow.integrations.overview(target)
        finally:
            server.stop()
            await database.dispose()

    counts = overview.counts
    jobs = sum(counts.values())
    if target == AMOCRM:
        stamps = [request.at for request in fake.requests]
        configured, limit = settings.amocrm.rate, float(fake.rate_limit)
        peak: float | None = max_per_window(stamps, fake.window)
        arrived = len(fake.leads) == leads
    elif target == BITRIX24:
        stamps = list(fake.arrivals)
        configured, limit = settings.bitrix24.rate, fake.drain_rate
        peak = bucket_peak(stamps, fake.drain_rate)
        arrived = len(fake.leads) == leads
    else:
        stamps = []
        configured, limit, peak = settings.meta.capi_rate, None, None
        arrived = len(fake.events) == jobs
    requests = len(stamps) if stamps else len(fake.requests)
    return Result(
        target=target,
        leads=leads,
        per_lead=per_lead,
        jobs=jobs,
        done=counts["done"],
        failed=counts["failed"],
        arrived=arrived,
        requests=requests,
        elapsed=elapsed,
        achieved=rate(stamps),
        sustained=rate(stamps[spent(stamps, configured) :]),
        configured=configured,
        remote_limit=limit,
        limit_errors=fake.limit_errors,
        peak=peak,
    )


def report(result: Result) -> None:
    shape = f"{result.leads} leads × {result.per_lead}"
    print(f"{result.target}, {shape}: {result.jobs} changes")
    there = "yes" if result.arrived else "NO"
    print(f"  delivered:        {result.done} done, {result.failed} failed; all there: {there}")
    per_second = result.jobs / result.elapsed
    print(f"  requests:         {result.requests} in {result.elapsed:.1f} s = {per_second:.0f} changes/s")
    if result.paced:
        against = (
            f", {result.sustained / result.remote_limit:.3f} of the CRM's {result.remote_limit:g}/s"
            if result.remote_limit
            else ""
        )
        print(
            f"  achieved rate:    {result.sustained:.2f}/s = {result.ratio:.3f} of our {result.configured:g}/s{against}"
            f"  target >= {TARGET_RATIO:.2f} of ours"
        )
        if result.sustained != result.achieved:
            print(f"  first to last:    {result.achieved:.2f}/s (with the limiter's burst, the first connection)")
    else:
        print(f"  achieved rate:    not measured: {result.requests} request(s) (ours {result.configured:g}/s)")
    if result.target == AMOCRM and result.peak is not None:
        print(f"  most in 1 s:      {result.peak:g}  limit {result.remote_limit:g}")
    if result.target == BITRIX24 and result.peak is not None:
        print(f"  bucket peak:      {result.peak:.1f}  of 50")
    print(f"  limit errors:     {result.limit_errors}  target 0")


async def main_async(changes: int, targets: list[str]) -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        await migrated(template)
        for target in targets:
            for per_lead in PER_LEAD:
                result = await run(template, target, changes // per_lead, per_lead)
                report(result)
                ok = ok and result.ok
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=1000, help="changes per run (default 1000)")
    parser.add_argument("--quick", action="store_true", help="200 changes per run")
    parser.add_argument("--only", default=",".join(TARGETS), help="comma-separated: amocrm, bitrix24, meta")
    args = parser.parse_args()
    targets = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    ok = asyncio.run(main_async(200 if args.quick else args.changes, targets))
    print(f"total {time.monotonic() - started:.0f} s")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
