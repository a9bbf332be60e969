"""The APScheduler (3.11, AsyncIOScheduler) that runs the reminder jobs beside polling.

Three jobs, all in the configured time zone:

- ``reminders``: every ``[reminders] tick``, and once right at start (new-lead reminders, follow-ups
  falling due, overdue escalations);
- ``digest``: every day at ``digest_time``;
- ``digest-catch-up``: once at start, so a digest missed while the bot was down still goes out the
  same day (the job sends nothing before ``digest_time`` and nothing twice: one outbox key a day).

The scheduler keeps no state of its own: everything that must survive a restart is in the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.config import Settings

log = logging.getLogger(__name__)

TICK_JOB = "reminders"
DIGEST_JOB = "digest"
DIGEST_CATCH_UP_JOB = "digest-catch-up"

Job = Callable[[datetime], Awaitable[int]]


class Jobs(Protocol):
    async def tick(self, now: datetime) -> int: ...

    async def send_digests(self, now: datetime) -> int: ...


# The runs in progress: stopping waits for them before the database they use is closed.
_RUNNING: set[asyncio.Task[object]] = set()


async def run_job(job: Job) -> None:
    """Call ``job`` with the real time; a failure is logged and the next run tries again."""
    task = asyncio.current_task()
    if task is not None:
        _RUNNING.add(task)
    try:
        queued = await job(datetime.now(UTC))
    except Exception:
        log.exception("scheduled job %s failed", getattr(job, "__name__", job))
        return
    finally:
        if task is not None:
            _RUNNING.discard(task)
    if queued:
        log.info("%s queued %d message(s)", getattr(job, "__name__", job), queued)


def create_scheduler(settings: Settings, jobs: Jobs) -> AsyncIOScheduler:
    """A scheduler with the reminder jobs registered; start it inside the running event loop."""
    tz = settings.crm.tz
    cfg = settings.reminders
    scheduler = AsyncIOScheduler(
        timezone=tz,
        # A late or piled-up run is done once, never in parallel with itself.
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    scheduler.add_job(
        run_job,
        IntervalTrigger(seconds=cfg.tick.total_seconds(), timezone=tz),
        args=[jobs.tick],
        id=TICK_JOB,
        name="new-lead reminders and follow-ups",
        next_run_time=datetime.now(tz),
        misfire_grace_time=max(1, int(cfg.tick.total_seconds())),
    )
    scheduler.add_job(
        run_job,
        CronTrigger(hour=cfg.digest_time.hour, minute=cfg.digest_time.minute, timezone=tz),
        args=[jobs.send_digests],
        id=DIGEST_JOB,
        name="daily digest",
        # However late the loop gets to it (a long stall), today's digest still goes out.
        misfire_grace_time=None,
    )
    scheduler.add_job(
        run_job,
        DateTrigger(run_date=datetime.now(tz), timezone=tz),
        args=[jobs.send_digests],
        id=DIGEST_CATCH_UP_JOB,
        name="today's digest if it was missed",
        misfire_grace_time=None,
    )
    return scheduler


async def stop_scheduler(scheduler: AsyncIOScheduler, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a grace period
    """No new runs; the runs in progress finish (for up to ``timeout``), then the scheduler stops.

    APScheduler's shutdown cancels coroutine jobs still running: one cancelled in the middle of a query
    leaves a database connection half closed, and the process (or a test's event loop) hangs on it.
    """
    if not scheduler.running:
        return
    scheduler.pause()
    loop = asyncio.get_running_loop()
    running = [task for task in _RUNNING if task.get_loop() is loop and not task.done()]
    if running:
        await asyncio.wait(running, timeout=timeout)
    scheduler.shutdown(wait=False)
