"""``updated_at`` means "a person or an integration changed this lead" (issue 16).

The reminder job's bookkeeping (``next_reminder_at``, ``reminder_count``) and a snoozed reminder are
no change to the lead: the card's "updated" time, the API's ``updated_since`` sync and the page-count
cache keyed on the newest ``updated_at`` all stay as they were.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bot.config import Settings
from db.reminders import ReminderJobs
from db.repositories.leads import LeadFilter
from db.uow import UnitOfWorkFactory
from tests.conftest import Team
from tests.test_reminders import lead_row, local, make_lead, reminder_settings


@pytest.fixture
def reminder_jobs(settings: Settings, uow_factory: UnitOfWorkFactory) -> ReminderJobs:
    return ReminderJobs(uow_factory, reminder_settings(settings))


async def _changed_since(uow_factory: UnitOfWorkFactory, team: Team, since: datetime) -> list[int]:
    async with uow_factory() as uow:
        page = await uow.leads.page(team.admin.user, LeadFilter(updated_since=since), limit=10)
        return [row.id for row in page.items]


async def test_reminder_ticks_leave_updated_at_and_a_real_change_moves_it(
    reminder_jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10, 0)
    )
    created = await lead_row(uow_factory, lead_id)
    after_creation = created.updated_at + timedelta(microseconds=1)

    await reminder_jobs.tick(local(2025, 12, 1, 10, 30))  # arms the first reminder
    await reminder_jobs.tick(local(2025, 12, 1, 12, 30))  # sends it and schedules the next
    async with uow_factory() as uow:  # a person snoozes the reminder: scheduling, not a change either
        await uow.reminders.snooze_lead(team.seller.user, lead_id, local(2025, 12, 2, 10, 0))
        await uow.commit()

    ticked = await lead_row(uow_factory, lead_id)
    assert ticked.reminder_count == 1
    assert ticked.next_reminder_at == local(2025, 12, 2, 10, 0)
    assert ticked.updated_at == created.updated_at
    assert await _changed_since(uow_factory, team, after_creation) == []

    async with uow_factory() as uow:
        await uow.leads.add_comment(team.seller.user, lead_id, "Перезвонил, думает")
        await uow.commit()
    commented = await lead_row(uow_factory, lead_id)
    assert commented.updated_at > created.updated_at
    assert await _changed_since(uow_factory, team, after_creation) == [lead_id]
