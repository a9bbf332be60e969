"""Issue 10: two instances on one database. Their reminder ticks at the same moment remind each lead
once; what they queue for the same person is one outbox row (the unique key decides, neither fails)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from bot.config import Settings
from db.engine import open_database
from db.models import Lead, OutboxMessage, utcnow
from db.reminders import ReminderJobs
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from tests.conftest import Team
from tests.test_reminders import reminder_settings


async def test_two_instances_ticking_at_once_remind_each_lead_once(
    settings: Settings, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    async with uow_factory() as uow:
        for n in range(12):
            await uow.leads.create(
                team.mop.user, LeadDraft(f"Клиент {n}", f"+9989012345{n:02d}", "Сайт", None, None, team.seller.id)
            )
        await uow.commit()
    config = reminder_settings(settings, working_hours="00:00-00:00")
    first, second = open_database(settings.database.url), open_database(settings.database.url)
    try:
        instances = [ReminderJobs(UnitOfWorkFactory(db, settings), config) for db in (first, second)]
        now = utcnow() + timedelta(hours=3)  # past the first reminder of every lead
        await instances[0].remind_new_leads(now - timedelta(hours=1))  # both arm; nothing is due yet
        await asyncio.gather(*(jobs.tick(now) for jobs in instances))
    finally:
        await first.dispose()
        await second.dispose()
    async with uow_factory(read_only=True) as uow:
        counts = (await uow.session.scalars(select(Lead.reminder_count).order_by(Lead.id))).all()
        to_seller = await uow.session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.chat_id == team.seller.chat_id)
        )
        kinds = (await uow.session.execute(select(OutboxMessage.chat_id, OutboxMessage.kind))).all()
    assert counts == [1] * 12, kinds
    assert to_seller == 12, kinds  # one reminder per lead (this factory queues no "new lead" notices)
