"""The scheduled side of automatic assignment: new leads left unassigned (outside working hours with
``[assignment] working_hours_only``, or while nobody was available) are handed out once assignment can
happen again (``LeadRepository.assign_waiting``), on the reminders' tick."""

from __future__ import annotations

from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.config import Settings
from bot.scheduler import run_job
from db.uow import UnitOfWorkFactory

BATCH = 100


class AssignmentJobs:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self.uow_factory = uow_factory

    async def assign_waiting(self, now: datetime) -> int:
        """Assign the waiting leads, a batch per transaction; how many were assigned."""
        total = 0
        while True:
            async with self.uow_factory() as uow:
                assigned = await uow.leads.assign_waiting(now, limit=BATCH)
                await uow.commit()
            total += assigned
            if assigned < BATCH:
                return total


ASSIGNMENT_JOB = "assignment"


def schedule(scheduler: AsyncIOScheduler, settings: Settings, uow_factory: UnitOfWorkFactory) -> None:
    """With automatic assignment on, hand out waiting leads on every reminders tick (and at start)."""
    if not settings.assignment.automatic:
        return
    tz = settings.crm.tz
    tick = settings.reminders.tick.total_seconds()
    scheduler.add_job(
        run_job,
        IntervalTrigger(seconds=tick, timezone=tz),
        args=[AssignmentJobs(uow_factory).assign_waiting],
        id=ASSIGNMENT_JOB,
        name="automatic assignment of waiting leads",
        next_run_time=datetime.now(tz),
        misfire_grace_time=max(1, int(tick)),
    )
