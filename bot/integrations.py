"""The remote CRMs' workers, built from the settings: one ``SyncWorker`` per integration configured; and
``first_sync``, what ``leadbot sync <integration>`` runs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TextIO

from bot.config import Settings
from db.integrations import AMOCRM, BITRIX24, CRM_INTEGRATIONS, META, queue_first_sync
from db.repositories.integrations import DONE, FAILED, PENDING, SENDING
from db.uow import UnitOfWorkFactory
from integrations.common import Adapter
from integrations.tokens import DatabaseTokenStore
from integrations.worker import SyncWorker


def create_adapter(settings: Settings, factory: UnitOfWorkFactory, name: str) -> Adapter:
    if name == AMOCRM:
        from integrations.amocrm import AmoCrmAdapter

        return AmoCrmAdapter(settings.amocrm, DatabaseTokenStore(factory, AMOCRM))
    if name == BITRIX24:
        from integrations.bitrix24 import Bitrix24Adapter

        return Bitrix24Adapter(settings.bitrix24)
    if name == META:
        from integrations.meta_capi import MetaCapiAdapter

        return MetaCapiAdapter(settings.meta)
    raise ValueError(f"unknown integration {name!r}")


def max_attempts(settings: Settings, name: str) -> int:
    return {
        AMOCRM: settings.amocrm.max_attempts,
        BITRIX24: settings.bitrix24.max_attempts,
        META: settings.meta.capi_max_attempts,
    }[name]


def create_sync_worker(
    settings: Settings,
    factory: UnitOfWorkFactory,
    name: str,
    *,
    poll: float = 2.0,
    retry_after: timedelta | None = None,
) -> SyncWorker:
    options = {} if retry_after is None else {"retry_after": retry_after}
    return SyncWorker(
        factory,
        create_adapter(settings, factory, name),
        max_attempts=max_attempts(settings, name),
        poll=poll,
        **options,
    )


def create_sync_workers(
    settings: Settings, factory: UnitOfWorkFactory, *, poll: float = 2.0, retry_after: timedelta | None = None
) -> list[SyncWorker]:
    return [
        create_sync_worker(settings, factory, name, poll=poll, retry_after=retry_after)
        for name in sorted(settings.integrations)
    ]


# ---- leadbot sync <integration> ------------------------------------------------------------------------------


@dataclass(slots=True)
class SyncReport:
    """What one ``leadbot sync`` run did: jobs queued, done and failed during it, left when it ended."""

    queued: int
    done: int
    failed: int
    left: int
    linked: int
    stopped: bool

    @property
    def exit_code(self) -> int:
        """0: everything went; 1: some jobs failed (an admin sees them in /integrations); 130: stopped."""
        return 130 if self.stopped else (1 if self.failed else 0)


async def _counts(factory: UnitOfWorkFactory, name: str) -> tuple[dict[str, int], int]:
    async with factory(read_only=True) as uow:
        return await uow.integrations.counts(name), await uow.integrations.linked(name)


async def first_sync(
    settings: Settings,
    factory: UnitOfWorkFactory,
    name: str,
    *,
    out: TextIO | None = None,
    every: float = 5.0,
    stop: asyncio.Event | None = None,
    worker: SyncWorker | None = None,
) -> SyncReport:
    """Queue the first sync of ``name`` (``db.integrations.queue_first_sync``), then empty that queue.

    Progress goes to ``out`` (stdout) every ``every`` seconds. ``stop`` set: the batch on its way
    finishes and is recorded, nothing more is taken; what is left stays queued, so the next run (or
    ``leadbot run``) goes on where this one stopped. The queue is the whole queue of ``name``: changes
    waiting from before are sent too, each lead's in order, and a job retried later is waited for.
    """
    out = out or sys.stdout
    stop = stop or asyncio.Event()
    async with factory() as uow:
        queued = await queue_first_sync(uow, name)
        await uow.commit()
    noun = "leads" if name in CRM_INTEGRATIONS else "stage events"
    print(f"{name}: {queued} {noun} queued for the first sync", file=out, flush=True)
    start, _ = await _counts(factory, name)

    def report(counts: dict[str, int], linked: int, stopped: bool) -> SyncReport:
        return SyncReport(
            queued=queued,
            done=max(0, counts[DONE] - start[DONE]),
            failed=max(0, counts[FAILED] - start[FAILED]),
            left=counts[PENDING] + counts[SENDING],
            linked=linked,
            stopped=stopped,
        )

    worker = worker or create_sync_worker(settings, factory, name)
    run = asyncio.create_task(worker.run(until_idle=True), name=f"sync-{name}")
    stopping = asyncio.create_task(stop.wait())
    try:
        while not run.done():
            await asyncio.wait({run, stopping}, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done() and not run.done():
                await worker.stop()  # the loop ends after the batch on its way is recorded
                await run
            if not run.done():
                now = report(*await _counts(factory, name), stopped=False)
                print(f"{name}: {now.done} done, {now.left} to go, {now.failed} failed", file=out, flush=True)
        run.result()
    finally:
        stopping.cancel()
        if not run.done():  # cancelled from outside (a second Ctrl-C): claimed jobs wait out their lease
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        await worker.adapter.aclose()
    counts, linked = await _counts(factory, name)
    final = report(counts, linked, stopped=stop.is_set() and counts[PENDING] + counts[SENDING] > 0)
    if final.stopped:
        print(
            f"{name}: stopped: {final.done} done, {final.failed} failed, {final.left} left; "
            f"run `leadbot sync {name}` again to go on",
            file=out,
            flush=True,
        )
    else:
        links = f"; {final.linked} leads linked" if name in CRM_INTEGRATIONS else ""
        failed = " (see /integrations)" if final.failed else ""
        print(
            f"{name}: first sync finished: {final.done} done, {final.failed} failed{failed}{links}",
            file=out,
            flush=True,
        )
    return final
