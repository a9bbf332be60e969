"""The daily digest: what each salesperson and each ROP gets, once a day, and a missed one caught up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from bot.config import Settings
from bot.presentation.views import MESSAGE_LIMIT
from db.engine import open_database
from db.enums import LeadStatus, Role
from db.models import Lead, User
from db.reminders import Kind, ReminderJobs
from db.uow import UnitOfWorkFactory
from tests.conftest import Team, add_member
from tests.rendering import text_of
from tests.test_followups import set_followup
from tests.test_reminders import local, make_lead, outbox, reminder_settings

DAY = local(2025, 12, 1, 9, 0)  # digest_time 09:00 in Tashkent
EARLIER = local(2025, 11, 30, 10)


@pytest.fixture
def jobs(settings: Settings, uow_factory: UnitOfWorkFactory) -> ReminderJobs:
    return ReminderJobs(uow_factory, reminder_settings(settings, digest_time="09:00"))


async def set_status(uow_factory: UnitOfWorkFactory, lead_id: int, status: LeadStatus) -> None:
    async with uow_factory() as uow:
        await uow.session.execute(update(Lead).where(Lead.id == lead_id).values(status=status))
        await uow.commit()


@pytest.fixture
async def work(uow_factory: UnitOfWorkFactory, team: Team) -> dict[str, int]:
    """Leads and follow-ups at 09:00 on 1 December."""
    ids = {
        "new": await make_lead(
            uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=EARLIER, name="Новый <клиент>"
        ),
        "in_work": await make_lead(
            uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=EARLIER, name="В работе"
        ),
        "other": await make_lead(
            uow_factory, team.rop.user, assigned_to=team.seller2.user, created_at=EARLIER, name="Чужой"
        ),
        "unassigned": await make_lead(uow_factory, team.rop.user, created_at=EARLIER, name="Ничей"),
        "closed": await make_lead(uow_factory, team.rop.user, created_at=EARLIER, name="Закрытый"),
    }
    await set_status(uow_factory, ids["in_work"], LeadStatus.IN_WORK)
    await set_status(uow_factory, ids["closed"], LeadStatus.CLOSED)
    seller = team.seller.user
    await set_followup(uow_factory, seller, ids["in_work"], local(2025, 11, 30, 15), "Просроченная", now=EARLIER)
    await set_followup(uow_factory, seller, ids["in_work"], local(2025, 12, 1, 15), "Сегодняшняя", now=EARLIER)
    await set_followup(uow_factory, seller, ids["in_work"], local(2025, 12, 2, 11), "Завтрашняя", now=EARLIER)
    return ids


async def test_each_salesperson_and_rop_gets_their_digest(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team, work: dict[str, int]
) -> None:
    assert await jobs.send_digests(DAY) == 3

    rows = {row.chat_id: row for row in await outbox(uow_factory, Kind.DIGEST)}
    # seller2 has a new lead; the admin is not a ROP; the deactivated seller and the finance get nothing.
    assert set(rows) == {team.seller.chat_id, team.seller2.chat_id, team.rop.chat_id}
    assert rows[team.seller.chat_id].idempotency_key == f"digest:{team.seller.id}:2025-12-01"

    seller = await text_of(uow_factory, rows[team.seller.chat_id])
    assert "01.12.2025" in seller
    assert "Новые лиды (1)" in seller and f"#{work['new']} Новый &lt;клиент&gt;" in seller
    assert "Просрочено (1)" in seller and "Просроченная" in seller
    assert "На сегодня (1)" in seller and "Сегодняшняя" in seller
    assert "Завтрашняя" not in seller and "Чужой" not in seller
    assert seller.index("Просроченная") < seller.index("Сегодняшняя")

    other = await text_of(uow_factory, rows[team.seller2.chat_id])
    assert "Чужой" in other and "Просрочено" not in other

    team_digest = await text_of(uow_factory, rows[team.rop.chat_id])
    assert "• новый: 3" in team_digest
    assert "• в работе: 1" in team_digest
    assert "• закрыт: 1" in team_digest
    assert "• отказ: 0" in team_digest
    assert "Новых без продажника: 1" in team_digest
    # Overdue work: seller has an overdue follow-up and a lead waiting in «новый»; seller2 a waiting lead.
    assert "Продажник Иванов: просроченных задач — 1, лидов ждут в «новом» — 1" in team_digest
    assert "Второй Продажник: просроченных задач — 0, лидов ждут в «новом» — 1" in team_digest
    assert team_digest.index("Продажник Иванов") < team_digest.index("Второй Продажник")


async def test_a_salesperson_with_nothing_to_do_gets_no_digest(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    assert await jobs.send_digests(DAY) == 1
    [row] = await outbox(uow_factory, Kind.DIGEST)
    assert row.chat_id == team.rop.chat_id
    assert "Просрочек нет" in (await text_of(uow_factory, row))


async def test_once_a_day_and_not_before_digest_time(
    jobs: ReminderJobs, settings: Settings, uow_factory: UnitOfWorkFactory, team: Team, work: dict[str, int]
) -> None:
    assert await jobs.send_digests(DAY - timedelta(minutes=1)) == 0
    assert await jobs.send_digests(DAY) == 3
    assert await jobs.send_digests(DAY) == 0

    # A restart at 09:05 (new engine and unit-of-work factory, the start-up catch-up run): nothing twice.
    restarted_db = open_database(settings.database.url)
    try:
        restarted = ReminderJobs(UnitOfWorkFactory(restarted_db, settings), jobs.settings)
        assert await restarted.send_digests(DAY + timedelta(minutes=5)) == 0
        assert await restarted.send_digests(local(2025, 12, 1, 23, 59)) == 0
        # The next day is a new digest.
        assert await restarted.send_digests(local(2025, 12, 2, 9, 0)) == 3
    finally:
        await restarted_db.dispose()
    keys = [row.idempotency_key for row in await outbox(uow_factory, Kind.DIGEST)]
    assert sorted(k.rsplit(":", 1)[1] for k in keys) == ["2025-12-01"] * 3 + ["2025-12-02"] * 3


async def test_a_digest_missed_at_nine_goes_out_when_the_bot_is_back(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team, work: dict[str, int]
) -> None:
    # The bot was down from 08:00 to 14:00: the start-up run sends today's digest.
    assert await jobs.send_digests(local(2025, 12, 1, 14, 0)) == 3
    rows = await outbox(uow_factory, Kind.DIGEST)
    assert {row.idempotency_key.rsplit(":", 1)[1] for row in rows} == {"2025-12-01"}
    # Seen at 14:00: yesterday's follow-up is overdue, the 15:00 one still ahead today.
    seller = await text_of(uow_factory, next(row for row in rows if row.chat_id == team.seller.chat_id))
    assert "Просрочено (1)" in seller and "На сегодня (1)" in seller


async def test_deactivated_people_get_no_digest(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team, work: dict[str, int]
) -> None:
    async with uow_factory() as uow:
        await uow.session.execute(
            update(User).where(User.id.in_([team.seller.id, team.rop.id])).values(is_active=False)
        )
        await uow.commit()
    await jobs.send_digests(DAY)
    # No active ROP left: the admins get the team digest instead.
    assert sorted(row.chat_id for row in await outbox(uow_factory, Kind.DIGEST)) == sorted(
        [team.seller2.chat_id, team.admin.chat_id]
    )


async def test_a_long_digest_is_cut_to_one_message_and_in_the_users_language(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    async with uow_factory() as uow:
        busy = await add_member(uow, 3001, Role.SELLER, "Занятой", language="en")
        await uow.commit()
    for number in range(40):
        await make_lead(
            uow_factory, team.rop.user, assigned_to=busy.user, created_at=EARLIER, name=f"{number:02d} " + "Я" * 190
        )
    await jobs.send_digests(DAY)
    [row] = [row for row in await outbox(uow_factory, Kind.DIGEST) if row.chat_id == busy.chat_id]
    text = await text_of(uow_factory, row)
    assert len(text) <= MESSAGE_LIMIT
    assert text.startswith("☀️ <b>Digest for 01.12.2025</b>")
    assert "New leads (40)" in text
    assert "…and 25 more" in text
