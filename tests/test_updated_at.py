"""``updated_at`` means "a person or an integration changed this lead" (issue 16).

The reminder job's bookkeeping (``next_reminder_at``, ``reminder_count``) and a snoozed reminder are
no change to the lead: the card's "updated" time, the API's ``updated_since`` sync and the page-count
cache keyed on the newest ``updated_at`` all stay as they were.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event

from bot.config import Settings
from db.enums import LeadStatus
from db.models import utcnow
from db.reminders import ReminderJobs
from db.repositories import LeadChanges
from db.repositories.leads import LeadFilter
from db.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import Harness, Team
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


# Every change a person (or an integration, through the same repositories) makes to a lead. With no
# ``onupdate`` on the column, each must move ``updated_at`` itself: a path that forgot would leave the
# lead out of the ``updated_since`` sync and serve a stale page count.
CHANGES: dict[str, Callable[[UnitOfWork, Team, int], Awaitable[object]]] = {
    "edit": lambda uow, team, lead_id: uow.leads.update(team.rop.user, lead_id, LeadChanges(notes="Хочет 3-комнатную")),
    "status": lambda uow, team, lead_id: uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK),
    "assign": lambda uow, team, lead_id: uow.leads.assign(team.rop.user, lead_id, team.seller2.user.id),
    "comment": lambda uow, team, lead_id: uow.leads.add_comment(team.seller.user, lead_id, "Перезвонил"),
    "follow-up": lambda uow, team, lead_id: uow.followups.create(
        team.seller.user, lead_id, utcnow() + timedelta(days=1), "Позвонить"
    ),
    "delete": lambda uow, team, lead_id: uow.leads.delete(team.admin.user, lead_id),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_every_change_by_a_person_moves_updated_at(
    uow_factory: UnitOfWorkFactory, team: Team, change: str
) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user)
    created = await lead_row(uow_factory, lead_id)
    async with uow_factory() as uow:
        await CHANGES[change](uow, team, lead_id)
        await uow.commit()
    assert (await lead_row(uow_factory, lead_id)).updated_at > created.updated_at


async def test_taking_an_unassigned_lead_moves_updated_at(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    lead_id = await make_lead(uow_factory, team.rop.user)
    created = await lead_row(uow_factory, lead_id)
    async with uow_factory() as uow:
        await uow.leads.take(team.seller.user, lead_id)
        await uow.commit()
    assert (await lead_row(uow_factory, lead_id)).updated_at > created.updated_at


async def _count_statements(uow_factory: UnitOfWorkFactory, team: Team) -> tuple[int, int]:
    """(total, how many COUNT(*) statements listing the first page ran): 0 counts = the cache answered."""
    counted: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "count(*)" in statement.lower():
            counted.append(statement)

    async with uow_factory() as uow:
        engine = uow.session.get_bind().engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            _, total = await uow.leads.list_offset(team.admin.user, LeadFilter(), page=1, size=10)
        finally:
            event.remove(engine, "before_cursor_execute", seen)
    return total, len(counted)


async def test_reminder_ticks_keep_the_page_count_cache_and_the_cards_updated_time(
    reminder_jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team, harness: Harness
) -> None:
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10, 0)
    )
    await harness.send(team.admin, f"/lead {lead_id}")
    card = harness.last_text(team.admin.chat_id)
    assert await _count_statements(uow_factory, team) == (1, 1)  # counted once, then remembered
    assert await _count_statements(uow_factory, team) == (1, 0)

    await reminder_jobs.tick(local(2025, 12, 1, 10, 30))
    await reminder_jobs.tick(local(2025, 12, 1, 12, 30))
    assert (await lead_row(uow_factory, lead_id)).reminder_count == 1
    assert await _count_statements(uow_factory, team) == (1, 0)  # the job changed no lead: still remembered
    await harness.send(team.admin, f"/lead {lead_id}")
    assert harness.last_text(team.admin.chat_id) == card

    async with uow_factory() as uow:  # a real change: counted again
        await uow.leads.delete(team.admin.user, lead_id)
        await uow.commit()
    assert await _count_statements(uow_factory, team) == (0, 1)
