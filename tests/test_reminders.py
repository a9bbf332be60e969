"""Reminders about leads waiting in «новый», the working-hours clock, durations and the scheduler wiring.

The jobs are called directly with a chosen ``now``; what they queue is read back from the outbox.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import ConfigError, Settings, load_settings
from bot.scheduler import DIGEST_CATCH_UP_JOB, DIGEST_JOB, TICK_JOB, create_scheduler, stop_scheduler
from db.durations import in_working_hours, parse_clock_range, parse_duration
from db.engine import open_database
from db.enums import LeadStatus, Role, StatusCode
from db.models import Lead, OutboxMessage, User, utcnow
from db.reminders import Kind, ReminderJobs, local_at, next_working_start
from db.repositories.leads import LeadDraft
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import LeadStatusCB, SnoozeCB, SnoozeTarget, SnoozeUntil
from tests.conftest import Harness, Team, add_member
from tests.rendering import buttons_of, text_of

TZ = ZoneInfo("Asia/Tashkent")


def local(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A Tashkent wall-clock time as aware UTC (what the jobs take)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=TZ).astimezone(UTC)


_phones = iter(range(1_000_000, 9_999_999))


async def make_lead(
    uow_factory: UnitOfWorkFactory,
    author: User,
    *,
    assigned_to: User | None = None,
    created_at: datetime | None = None,
    name: str = "Иван Петров",
) -> int:
    async with uow_factory() as uow:
        actor = await uow.users.by_id(author.id)
        assert actor is not None
        lead = await uow.leads.create(
            actor,
            LeadDraft(
                client_name=name,
                phone_number=f"+99890{next(_phones)}",
                source="Instagram",
                assigned_to=assigned_to.id if assigned_to else None,
            ),
        )
        if created_at is not None:
            lead.created_at = created_at
        await uow.commit()
        return lead.id


async def outbox(uow_factory: UnitOfWorkFactory, kind: str | None = None) -> list[OutboxMessage]:
    async with uow_factory() as uow:
        # Only what the reminder jobs queue: creating leads also notifies (another feature's rows).
        kinds = [kind] if kind is not None else list(Kind)
        stmt = select(OutboxMessage).where(OutboxMessage.kind.in_(kinds)).order_by(OutboxMessage.id)
        return list((await uow.session.scalars(stmt)).all())


async def lead_row(uow_factory: UnitOfWorkFactory, lead_id: int) -> Lead:
    async with uow_factory() as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None
        return lead


def chats(rows: list[OutboxMessage]) -> list[int]:
    return [row.chat_id for row in rows]


async def button_data(uow_factory: UnitOfWorkFactory, row: OutboxMessage) -> list[str]:
    return [data for _, data in await buttons_of(uow_factory, row)]


def reminder_settings(settings: Settings, **reminders: Any) -> Settings:
    """The test settings with a [reminders] section given as the config file would (durations as text)."""
    data = settings.model_dump(mode="python")
    data["bot"]["token"] = "42:TEST-TOKEN"
    data["reminders"] = {
        "new_lead_after": "2h",
        "repeat_every": "4h",
        "escalate_after": 3,
        "working_hours": "09:00-20:00",
        **reminders,
    }
    return Settings.model_validate(data)


@pytest.fixture
def jobs(settings: Settings, uow_factory: UnitOfWorkFactory) -> ReminderJobs:
    return ReminderJobs(uow_factory, reminder_settings(settings))


# ---- who is reminded, how often, escalation ------------------------------------------------------------


async def test_assigned_lead_reminds_its_salesperson_repeats_and_escalates_once(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10, 0)
    )

    assert await jobs.tick(local(2025, 12, 1, 11, 59)) == 0  # not yet two hours
    assert await outbox(uow_factory) == []
    assert (await lead_row(uow_factory, lead_id)).next_reminder_at == local(2025, 12, 1, 12, 0)

    assert await jobs.tick(local(2025, 12, 1, 12, 0)) == 1
    first = await outbox(uow_factory)
    assert chats(first) == [team.seller.chat_id]
    assert first[0].kind == Kind.REMINDER
    assert first[0].idempotency_key.startswith(f"remind:{lead_id}:1:")
    assert first[0].user_id == team.seller.id
    assert f"Лид #{lead_id}" in (await text_of(uow_factory, first[0]))
    assert "Напоминание №1" in (await text_of(uow_factory, first[0]))
    assert LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK).pack() in await button_data(uow_factory, first[0])
    assert SnoozeCB(target=SnoozeTarget.LEAD, target_id=lead_id, until=SnoozeUntil.HOUR).pack() in await button_data(
        uow_factory, first[0]
    )
    assert SnoozeCB(
        target=SnoozeTarget.LEAD, target_id=lead_id, until=SnoozeUntil.TOMORROW
    ).pack() in await button_data(uow_factory, first[0])

    # Not again before repeat_every (4h), then again at it.
    assert await jobs.tick(local(2025, 12, 1, 15, 59)) == 0
    assert await jobs.tick(local(2025, 12, 1, 16, 0)) == 1
    # The third falls at 20:00, the end of the working day: it waits for 09:00.
    assert await jobs.tick(local(2025, 12, 1, 20, 0)) == 0
    assert await jobs.tick(local(2025, 12, 2, 8, 59)) == 0
    assert await jobs.tick(local(2025, 12, 2, 9, 0)) == 2  # third reminder + the ROP told
    assert await jobs.tick(local(2025, 12, 2, 13, 0)) == 1  # fourth: the ROP is not told again
    assert await jobs.tick(local(2025, 12, 2, 17, 0)) == 1

    rows = await outbox(uow_factory)
    reminders = [r for r in rows if r.kind == Kind.REMINDER]
    escalations = [r for r in rows if r.kind == Kind.REMINDER_ESCALATION]
    assert chats(reminders) == [team.seller.chat_id] * 5
    assert [r.idempotency_key.split(":")[2] for r in reminders] == ["1", "2", "3", "4", "5"]
    assert chats(escalations) == [team.rop.chat_id]  # once, to the ROP only (the admin is not a ROP)
    assert "после 3 напоминаний" in (await text_of(uow_factory, escalations[0]))
    assert "Продажник Иванов" in (await text_of(uow_factory, escalations[0]))
    assert len({r.idempotency_key for r in rows}) == len(rows)
    assert (await lead_row(uow_factory, lead_id)).reminder_count == 5


async def test_unassigned_lead_reminds_the_active_rops(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    async with uow_factory() as uow:
        second_rop = await add_member(uow, 2002, Role.ROP, "Второй", "РОП")
        await add_member(uow, 2003, Role.ROP, "Уволенный", "РОП", active=False)
        await uow.commit()
    lead_id = await make_lead(uow_factory, team.mop.user, created_at=local(2025, 12, 1, 10, 0))

    for hour in (12, 16):
        await jobs.tick(local(2025, 12, 1, hour))
    await jobs.tick(local(2025, 12, 2, 9))

    rows = await outbox(uow_factory)
    assert sorted(chats(rows)) == sorted([team.rop.chat_id, second_rop.chat_id] * 3)
    # The ROPs are the ones reminded already: no separate escalation.
    assert {r.kind for r in rows} == {Kind.REMINDER}
    assert all([f"Лид #{lead_id}" in await text_of(uow_factory, r) for r in rows])


async def test_lead_of_a_deactivated_salesperson_goes_to_the_rops(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10))
    async with uow_factory() as uow:
        await uow.session.execute(update(User).where(User.id == team.seller.id).values(is_active=False))
        await uow.commit()

    await jobs.tick(local(2025, 12, 1, 12))

    assert chats(await outbox(uow_factory)) == [team.rop.chat_id]


async def test_nothing_outside_working_hours_and_the_reminder_arrives_next_morning(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 19, 30))

    for moment in (
        local(2025, 12, 1, 21, 30),
        local(2025, 12, 1, 23, 59),
        local(2025, 12, 2, 3),
        local(2025, 12, 2, 8, 59, 59),
    ):
        assert await jobs.tick(moment) == 0
    assert await outbox(uow_factory) == []

    assert await jobs.tick(local(2025, 12, 2, 9, 0)) == 1
    assert chats(await outbox(uow_factory)) == [team.seller.chat_id]


async def test_escaping_of_client_names(jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team) -> None:
    await make_lead(
        uow_factory,
        team.rop.user,
        assigned_to=team.seller.user,
        created_at=local(2025, 12, 1, 10),
        name="<b>Иван</b> & Co",
    )
    await jobs.tick(local(2025, 12, 1, 12))
    text = await text_of(uow_factory, (await outbox(uow_factory))[0])
    assert "&lt;b&gt;Иван&lt;/b&gt; &amp; Co" in text
    assert "<b>Иван</b>" not in text


# ---- restart, leaving «новый» --------------------------------------------------------------------------


async def test_a_restart_repeats_nothing(jobs: ReminderJobs, settings: Settings, team: Team) -> None:
    uow_factory = jobs.uow_factory
    await make_lead(uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10))
    await make_lead(uow_factory, team.mop.user, created_at=local(2025, 12, 1, 10))
    moments = [local(2025, 12, 1, 12), local(2025, 12, 1, 16), local(2025, 12, 2, 9)]
    for moment in moments:
        await jobs.tick(moment)
    before = [(r.idempotency_key, r.chat_id) for r in await outbox(uow_factory)]
    assert len(before) == 3 + 3 + 1  # seller 3, ROP 3 for the unassigned one, ROP 1 escalation

    # A new process: a new engine and unit-of-work factory on the same database, the same moments again.
    restarted_db = open_database(settings.database.url)
    try:
        restarted = ReminderJobs(UnitOfWorkFactory(restarted_db, settings), jobs.settings)
        for moment in moments:
            assert await restarted.tick(moment) == 0
    finally:
        await restarted_db.dispose()
    assert [(r.idempotency_key, r.chat_id) for r in await outbox(uow_factory)] == before


async def test_taking_the_lead_into_work_stops_the_reminders(
    jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10)
    )
    await jobs.tick(local(2025, 12, 1, 12))
    async with uow_factory() as uow:
        seller = await uow.users.by_id(team.seller.id)
        assert seller is not None
        await uow.leads.change_status(seller, lead_id, LeadStatus.IN_WORK)
        await uow.commit()

    for moment in (local(2025, 12, 1, 16), local(2025, 12, 2, 9), local(2025, 12, 3, 9)):
        assert await jobs.tick(moment) == 0
    assert len(await outbox(uow_factory)) == 1


async def test_deleted_lead_is_not_reminded(jobs: ReminderJobs, uow_factory: UnitOfWorkFactory, team: Team) -> None:
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=local(2025, 12, 1, 10)
    )
    async with uow_factory() as uow:
        rop = await uow.users.by_id(team.rop.id)
        assert rop is not None
        await uow.leads.delete(rop, lead_id)
        await uow.commit()
    assert await jobs.tick(local(2025, 12, 1, 12)) == 0


async def test_a_reopened_lead_is_reminded_afresh(
    settings: Settings, uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    jobs = ReminderJobs(uow_factory, reminder_settings(settings, working_hours="00:00-00:00"))  # all day
    now = utcnow()
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=now - timedelta(hours=3)
    )
    await jobs.tick(now)
    reopened = utcnow()
    async with uow_factory() as uow:
        rop = await uow.users.by_id(team.rop.id)
        assert rop is not None
        await uow.leads.change_status(rop, lead_id, LeadStatus.REFUSED, reason="передумал")
        await uow.leads.change_status(rop, lead_id, LeadStatus.NEW)
        await uow.commit()

    await jobs.tick(reopened + timedelta(hours=1))  # re-armed from the reopening, not the creation
    lead = await lead_row(uow_factory, lead_id)
    assert lead.reminder_count == 0
    assert lead.next_reminder_at is not None
    assert reopened <= lead.next_reminder_at - timedelta(hours=2) <= utcnow()
    assert await jobs.tick(lead.next_reminder_at) == 1

    rows = await outbox(uow_factory, Kind.REMINDER)
    assert len(rows) == 2
    assert [r.idempotency_key.split(":")[2] for r in rows] == ["1", "1"]  # counted afresh, distinct keys


# ---- snooze ----------------------------------------------------------------------------------------------


async def test_snooze_buttons_push_the_next_reminder(settings: Settings, harness: Harness, team: Team) -> None:
    uow_factory = harness.uow_factory
    jobs = ReminderJobs(uow_factory, reminder_settings(settings, working_hours="00:00-00:00", escalate_after=5))
    start = utcnow()
    lead_id = await make_lead(
        uow_factory, team.rop.user, assigned_to=team.seller.user, created_at=start - timedelta(hours=3)
    )
    assert await jobs.tick(start) == 1

    before = utcnow()
    await harness.click(team.seller, SnoozeCB(target=SnoozeTarget.LEAD, target_id=lead_id, until=SnoozeUntil.HOUR))
    after = utcnow()
    snoozed = (await lead_row(uow_factory, lead_id)).next_reminder_at
    assert snoozed is not None
    assert before + timedelta(hours=1) - timedelta(seconds=1) <= snoozed <= after + timedelta(hours=1)
    assert any(answer.startswith("Напомню") for answer in harness.alerts())

    assert await jobs.tick(snoozed - timedelta(seconds=1)) == 0
    assert await jobs.tick(snoozed) == 1

    before = utcnow()
    await harness.click(team.seller, SnoozeCB(target=SnoozeTarget.LEAD, target_id=lead_id, until=SnoozeUntil.TOMORROW))
    after = utcnow()
    tomorrow = (await lead_row(uow_factory, lead_id)).next_reminder_at
    assert tomorrow in {local_at(before, TZ, time(10, 0), days=1), local_at(after, TZ, time(10, 0), days=1)}
    assert await jobs.tick(tomorrow - timedelta(minutes=1)) == 0
    assert await jobs.tick(tomorrow) == 1
    assert chats(await outbox(uow_factory)) == [team.seller.chat_id] * 3


async def test_snooze_of_someone_elses_lead_is_refused(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    await harness.click(team.seller2, SnoozeCB(target=SnoozeTarget.LEAD, target_id=lead_id, until=SnoozeUntil.HOUR))
    assert harness.alerts() == ["Изменять этот лид вы не можете."]
    assert (await lead_row(harness.uow_factory, lead_id)).next_reminder_at is None


async def test_snooze_of_a_lead_already_in_work_says_so(harness: Harness, team: Team) -> None:
    lead_id = await make_lead(harness.uow_factory, team.rop.user, assigned_to=team.seller.user)
    async with harness.uow_factory() as uow:
        seller = await uow.users.by_id(team.seller.id)
        assert seller is not None
        await uow.leads.change_status(seller, lead_id, LeadStatus.IN_WORK)
        await uow.commit()
    await harness.click(team.seller, SnoozeCB(target=SnoozeTarget.LEAD, target_id=lead_id, until=SnoozeUntil.HOUR))
    assert "больше не будет" in harness.alerts()[0]
    assert (await lead_row(harness.uow_factory, lead_id)).next_reminder_at is None


# ---- the clock and the config ---------------------------------------------------------------------------


def test_working_hours() -> None:
    hours = (time(9, 0), time(20, 0))
    assert not in_working_hours(local(2025, 12, 1, 8, 59, 59), hours, TZ)
    assert in_working_hours(local(2025, 12, 1, 9, 0), hours, TZ)
    assert in_working_hours(local(2025, 12, 1, 19, 59, 59), hours, TZ)
    assert not in_working_hours(local(2025, 12, 1, 20, 0), hours, TZ)
    night = (time(22, 0), time(6, 0))
    assert in_working_hours(local(2025, 12, 1, 23, 0), night, TZ)
    assert in_working_hours(local(2025, 12, 1, 5, 59), night, TZ)
    assert not in_working_hours(local(2025, 12, 1, 12, 0), night, TZ)
    assert next_working_start(local(2025, 12, 1, 21, 0), hours, TZ) == local(2025, 12, 2, 9, 0)
    assert next_working_start(local(2025, 12, 1, 7, 0), hours, TZ) == local(2025, 12, 1, 9, 0)
    assert next_working_start(local(2025, 12, 1, 12, 0), hours, TZ) == local(2025, 12, 1, 12, 0)


def test_durations_read_like_the_config() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    assert parse_duration(" 3H ") == timedelta(hours=3)
    for bad in ("", "2", "2x", "h", "-1h", "1.5h", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_clock_range("09:00-20:00") == (time(9), time(20))
    with pytest.raises(ValueError):
        parse_clock_range("9-20h")


def test_reminders_section_from_a_config_file(tmp_path: Any) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[reminders]\ntick = "90s"\nnew_lead_after = "15m"\nrepeat_every = "2h"\n'
        'overdue_escalate_after = "1d"\nworking_hours = "08:30-19:00"\ndigest_time = "08:45"\n',
        encoding="utf-8",
    )
    cfg = load_settings(path).reminders
    assert (cfg.tick, cfg.new_lead_after, cfg.repeat_every, cfg.overdue_escalate_after) == (
        timedelta(seconds=90),
        timedelta(minutes=15),
        timedelta(hours=2),
        timedelta(days=1),
    )
    assert cfg.working_hours == (time(8, 30), time(19, 0))
    assert cfg.digest_time == time(8, 45)

    path.write_text('[reminders]\nrepeat_every = "soon"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"reminders\.repeat_every"):
        load_settings(path)


# ---- the scheduler -------------------------------------------------------------------------------------


class StubJobs:
    """Records the times the scheduler passes; lets the test wait for the first runs."""

    def __init__(self) -> None:
        self.ticks: list[datetime] = []
        self.digests: list[datetime] = []
        self.ticked = asyncio.Event()
        self.digested = asyncio.Event()

    async def tick(self, now: datetime) -> int:
        self.ticks.append(now)
        self.ticked.set()
        return 0

    async def send_digests(self, now: datetime) -> int:
        self.digests.append(now)
        self.digested.set()
        return 0


def test_scheduler_registers_the_jobs_at_the_configured_times(settings: Settings) -> None:
    configured = reminder_settings(settings, tick="90s", digest_time="08:45")
    configured.crm.timezone = "Europe/Moscow"
    scheduler = create_scheduler(configured, StubJobs())
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {TICK_JOB, DIGEST_JOB, DIGEST_CATCH_UP_JOB}

    tick = jobs[TICK_JOB].trigger
    assert isinstance(tick, IntervalTrigger)
    assert tick.interval == timedelta(seconds=90)

    digest = jobs[DIGEST_JOB].trigger
    assert isinstance(digest, CronTrigger)
    fields = {field.name: str(field) for field in digest.fields}
    assert (fields["hour"], fields["minute"]) == ("8", "45")
    assert str(digest.timezone) == "Europe/Moscow"
    assert str(scheduler.timezone) == "Europe/Moscow"
    assert jobs[DIGEST_JOB].misfire_grace_time is None

    assert isinstance(jobs[DIGEST_CATCH_UP_JOB].trigger, DateTrigger)


async def test_scheduler_starts_runs_the_jobs_with_the_real_time_and_stops(settings: Settings) -> None:
    stub = StubJobs()
    scheduler = create_scheduler(settings, stub)
    before = datetime.now(UTC)
    scheduler.start()
    try:
        assert scheduler.running
        # The first tick and the catch-up digest run right at start.
        await asyncio.wait_for(asyncio.gather(stub.ticked.wait(), stub.digested.wait()), timeout=10)
    finally:
        await stop_scheduler(scheduler)
    await asyncio.sleep(0)
    assert not scheduler.running
    assert stub.ticks and stub.digests
    for moment in stub.ticks + stub.digests:
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
        assert moment >= before
    # Stopping twice is harmless (the runner's finally block may meet a scheduler that never started).
    await stop_scheduler(scheduler)


# ---- the queries walk their indexes ----------------------------------------------------------------------


async def _plans(engine: AsyncEngine, run: Any) -> list[str]:
    """EXPLAIN QUERY PLAN of every SELECT ``run`` sends, as sent (parameters included)."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        await run()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    plans = []
    async with engine.connect() as conn:
        for statement, parameters in captured:
            rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
            plans.append(" | ".join(str(row[-1]) for row in rows))
    return plans


@pytest.mark.sqlite_only
async def test_reminder_queries_use_their_indexes(engine: AsyncEngine, uow_factory: UnitOfWorkFactory) -> None:
    now = local(2025, 12, 1, 12)

    async def arm() -> None:
        async with uow_factory() as uow:
            await uow.reminders.arm(timedelta(hours=2))

    async def due_leads() -> None:
        async with uow_factory() as uow:
            await uow.reminders.due_lead_ids(now, limit=10)

    async def due_followups() -> None:
        async with uow_factory() as uow:
            await uow.followups.due_unreminded(now, limit=10)
            await uow.followups.overdue_unescalated(now, limit=10)

    [arm_plan] = await _plans(engine, arm)
    assert "USING INDEX ix_leads_reminder_due (status=? AND next_reminder_at=?)" in arm_plan
    [due_plan] = await _plans(engine, due_leads)
    assert "USING INDEX ix_leads_reminder_due (status=? AND next_reminder_at<?)" in due_plan
    for plan in await _plans(engine, due_followups):
        assert "USING INDEX ix_followups_open_due (done_at=? AND due_at<?)" in plan


async def test_stopping_lets_a_job_in_progress_finish_before_the_database_closes(settings: Settings) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    class SlowJobs:
        async def tick(self, now: datetime) -> int:
            started.set()
            await asyncio.sleep(0.3)  # a query in progress when the bot is told to stop
            finished.set()
            return 0

        async def send_digests(self, now: datetime) -> int:
            return 0

    scheduler = create_scheduler(settings, SlowJobs())
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=10)
    await stop_scheduler(scheduler)
    # Not cancelled half-way (which left a connection half closed and hung the event loop's close).
    assert finished.is_set()
    await asyncio.sleep(0)
    assert not scheduler.running
