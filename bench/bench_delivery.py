"""Delivery benchmark: 1,000 notifications to 200 chats through the real worker, over real HTTP.

The production ``DeliveryWorker`` (real clock, real aiogram ``AiohttpSession``) drains an outbox in a
fresh, migrated SQLite file against ``tests/fake_bot_api.FakeBotAPI`` on 127.0.0.1 with Telegram's flood
limits enforced (30 sends/s in total, 1/s per chat, 20/min per group; a send past them is answered 429).

Reports the achieved rate as a share of the configured ``rate_per_second`` (target ≥ 0.90), the 429s
(target 0) and the most messages one chat received within any one second (target ≤ 1).

    python bench/bench_delivery.py [--messages 1000] [--chats 200] [--rate 25]
        [--instances 2] [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench_delivery]

``--instances N`` runs N workers side by side, each with its own database engine and its own HTTP
session to the fake Bot API, as N ``leadbot run`` processes would (in one process here, so one
machine's CPU): the rate and the 429s are then those of the instances together, against the one
token's limits. ``--database-url`` uses that database instead of a fresh SQLite file; on PostgreSQL its
``public`` schema is dropped and re-created first, so the database's name must contain ``bench``.

At the default 25/s the run takes about 40 seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._server import recreate_schema  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.delivery import DeliveryWorker  # noqa: E402
from bot.factory import create_bot, create_uow_factory  # noqa: E402
from bot.presentation.presenter import message_payload  # noqa: E402
from db.engine import open_database  # noqa: E402
from db.enums import OutboxStatus  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from tests.fake_bot_api import FakeBotAPI, max_per_window  # noqa: E402
from tests.fakes import BOT_TOKEN  # noqa: E402


class ServerThread:
    """The fake Bot API in a thread of its own, as Telegram is another machine: its work does not
    slow the worker's event loop down."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.api: FakeBotAPI | None = None

    def start(self) -> FakeBotAPI:
        self.thread.start()

        async def boot() -> FakeBotAPI:
            api = FakeBotAPI(enforce_limits=True)
            await api.start()
            return api

        self.api = asyncio.run_coroutine_threadsafe(boot(), self.loop).result()
        return self.api

    def stop(self) -> None:
        if self.api is not None:
            asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


async def fresh_database(url: str) -> None:
    """Empty the benchmark's PostgreSQL database (only one named for benchmarks) and migrate it."""
    from sqlalchemy import make_url

    if "bench" not in (make_url(url).database or ""):
        raise SystemExit(f"refusing to empty {make_url(url).database!r}: its name must contain 'bench'")
    await recreate_schema(url)


async def run(
    messages: int, chats: int, rate: float, *, instances: int = 1, database_url: str | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        if database_url is not None and url.startswith("postgresql"):
            await fresh_database(url)
        database = open_database(url)
        await upgrade(database.write_engine)
        settings = Settings.model_validate(
            {"bot": {"token": BOT_TOKEN}, "database": {"url": url}, "notifications": {"rate_per_second": rate}}
        )
        factory = create_uow_factory(settings, database)

        rng = random.Random(42)
        targets = [100_000 + i % chats for i in range(messages)]
        rng.shuffle(targets)
        async with factory() as uow:
            for i, chat_id in enumerate(targets):
                await uow.outbox.enqueue(
                    key=f"bench:{i}", chat_id=chat_id, kind="bench", payload=message_payload(f"Notification #{i}")
                )
            await uow.commit()

        stamps: dict[int, list[float]] = defaultdict(list)
        server = ServerThread()
        api = server.start()
        try:
            original = FakeBotAPI._send_message

            def send_message(fake: FakeBotAPI, params: dict[str, Any]) -> dict[str, Any]:
                stamps[int(params["chat_id"])].append(time.monotonic())
                return original(fake, params)

            api.handle("sendMessage", send_message)
            bot_settings = settings.model_copy(
                update={"bot": settings.bot.model_copy(update={"api_server": api.base_url})}
            )
            # Each instance: its own engine (the first reuses the one above) and its own bot session.
            databases = [database] + [open_database(url) for _ in range(instances - 1)]
            bots = [create_bot(bot_settings) for _ in range(instances)]
            workers = [
                DeliveryWorker(bot, create_uow_factory(settings, db), settings.notifications)
                for bot, db in zip(bots, databases, strict=True)
            ]
            started = time.monotonic()
            try:
                await asyncio.gather(*(worker.run(until_idle=True) for worker in workers))
            finally:
                for bot in bots:
                    await bot.session.close()
                for extra in databases[1:]:
                    await extra.dispose()
            elapsed = time.monotonic() - started
            too_many = api.too_many_requests
        finally:
            server.stop()

        async with factory() as uow:
            counts = await uow.outbox.counts()
        await database.dispose()

    every = sorted(t for chat in stamps.values() for t in chat)
    sent = len(every)
    span = every[-1] - every[0] if sent > 1 else 0.0
    achieved = (sent - 1) / span if span else 0.0
    return {
        "instances": instances,
        "database": url.split(":", 1)[0],
        "messages": messages,
        "chats": chats,
        "configured_rate": rate,
        "delivered": sent,
        "sent_rows": counts[OutboxStatus.SENT],
        "failed_rows": counts[OutboxStatus.FAILED],
        "elapsed_s": elapsed,
        "achieved_rate": achieved,
        "ratio": achieved / rate,
        "ratio_wall": sent / elapsed / rate if elapsed else 0.0,
        "max_global_per_second": max_per_window(every, 1.0),
        "too_many_requests": too_many,
        "max_per_chat_per_second": max(max_per_window(sorted(chat), 1.0) for chat in stamps.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--instances", type=int, default=1, help="delivery workers side by side (default 1)")
    parser.add_argument("--database-url", default=None, help="a database instead of a fresh SQLite file")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.messages, args.chats, args.rate, instances=args.instances, database_url=args.database_url)
    )
    print(
        f"{result['messages']} notifications to {result['chats']} chats, "
        f"rate_per_second={result['configured_rate']:g}, {result['instances']} instance(s) on {result['database']}"
    )
    rows = f"rows sent {result['sent_rows']}, failed {result['failed_rows']}"
    print(f"  delivered:              {result['delivered']} ({rows})")
    print(f"  elapsed:                {result['elapsed_s']:.1f} s")
    print(
        f"  achieved rate:          {result['achieved_rate']:.2f}/s = {result['ratio']:.3f} of configured "
        f"(wall clock incl. start and finish: {result['ratio_wall']:.3f})  target >= 0.90"
    )
    print(f"  most sends in 1 s:      {result['max_global_per_second']}")
    print(f"  429 answers:            {result['too_many_requests']}  target 0")
    print(f"  max per chat in 1 s:    {result['max_per_chat_per_second']}  target <= 1")
    ok = (
        result["ratio"] >= 0.90
        and result["too_many_requests"] == 0
        and result["max_per_chat_per_second"] <= 1
        and result["delivered"] == result["messages"]
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
