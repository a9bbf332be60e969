"""The Google Sheets export against a fake Sheets API on 127.0.0.1: the sheet ends equal to the database
through changes, deletions, 429s and 500s, a restart, and a thousand changes within the quota."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiogram.fsm.storage.memory import MemoryStorage

from bot.config import GoogleSheetsSection, Settings
from bot.factory import create_dispatcher
from bot.sheets import (
    CURSOR_CELL,
    TURN_KEY,
    ServiceAccount,
    SheetsClient,
    SheetsExporter,
    SheetsSync,
    parse_cursor,
)
from bot.texts import texts_for
from db.engine import Database
from db.enums import LeadStatus, StatusCode
from db.exports import changed_since
from db.models import Lead, utcnow
from db.repositories import LeadChanges, LeadDraft
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import LeadStatusCB
from tests.conftest import Harness, Team
from tests.fake_sheets import FakeSheets, column_index, service_account_file
from tests.fakes import RecordingSession, make_bot


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeSheets]:
    key = service_account_file(tmp_path / "service-account.json")
    server = FakeSheets(key=key)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def config(fake: FakeSheets, tmp_path: Path) -> GoogleSheetsSection:
    return GoogleSheetsSection(
        credentials_file=str(tmp_path / "service-account.json"),
        spreadsheet_id=fake.spreadsheet_id,
        api_url=fake.base,
        token_url=f"{fake.base}/token",
        debounce=timedelta(seconds=1),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def make_sync(
    uow_factory: UnitOfWorkFactory, config: GoogleSheetsSection, settings: Settings, http: httpx.AsyncClient, **kw: Any
) -> SheetsSync:
    assert config.credentials_file is not None
    client = SheetsClient(config, ServiceAccount.from_file(config.credentials_file), http)
    return SheetsSync(uow_factory, config, settings.crm, texts_for("ru"), client, backoff_base=0.01, **kw)


async def assert_sheet_equals_database(fake: FakeSheets, sync: SheetsSync, uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory(read_only=True) as uow:
        leads = await changed_since(uow.session, None, datetime.now(UTC) + timedelta(days=1), 10**6)
    assert leads
    for lead in leads:
        assert fake.row(lead.id + 1) == sync.row(lead), lead.id
    assert fake.row(1)[:2] == ["№", "Клиент"]


async def add_leads(uow_factory: UnitOfWorkFactory, team: Team, count: int, first: int = 0) -> list[int]:
    async with uow_factory() as uow:
        ids = []
        for n in range(first, first + count):
            draft = LeadDraft(f"Клиент {n}", f"+9989011{n:05d}", "Instagram", budget=100.0 * n)
            ids.append((await uow.leads.create(team.rop.user, draft)).id)
        await uow.commit()
    return ids


async def test_the_sheet_follows_changes_and_deletions(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    ids = await add_leads(uow_factory, team, 5)
    sync = make_sync(uow_factory, config, settings, http)
    assert await sync.run_once() == 5
    await assert_sheet_equals_database(fake, sync, uow_factory)
    assert await sync.run_once() == 0  # up to date: no write

    async with uow_factory() as uow:
        await uow.leads.assign(team.rop.user, ids[0], team.seller.id)
        await uow.leads.change_status(team.seller.user, ids[0], LeadStatus.IN_WORK)
        await uow.leads.change_status(team.seller.user, ids[0], LeadStatus.CLOSED)
        await uow.leads.delete(team.rop.user, ids[1])
        await uow.commit()
    writes = len(fake.writes)
    assert await sync.run_once() == 2
    assert len(fake.writes) == writes + 1  # both changes in one request
    await assert_sheet_equals_database(fake, sync, uow_factory)
    assert fake.row(ids[0] + 1)[3] == "закрыт" and fake.row(ids[0] + 1)[6] == "Продажник Иванов"
    assert fake.row(ids[1] + 1)[3] == "удалён"
    assert parse_cursor(fake.cells[(0, column_index(CURSOR_CELL[0]))]) == sync.state.cursor


async def test_429_and_500_are_ridden_out(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    await add_leads(uow_factory, team, 3)
    sync = make_sync(uow_factory, config, settings, http)
    fake.fail(429, retry_after="7")
    fake.fail(500, times=2)
    assert await sync.step() == 7.0  # Retry-After
    assert "429" in (sync.state.last_error or "")
    assert await sync.step() == pytest.approx(0.02)  # exponential: 0.01 × 2
    assert await sync.step() == pytest.approx(0.04)
    assert sync.state.failures == 3
    assert await sync.step() == 1.0  # written; back to the debounce
    assert sync.state.failures == 0
    await assert_sheet_equals_database(fake, sync, uow_factory)
    # An error that is not transient (a wrong spreadsheet, no access) waits at least the debounce.
    fake.fail(403)
    await add_leads(uow_factory, team, 1, first=10)
    assert await sync.step() >= 1.0


async def test_a_database_error_does_not_end_the_loop(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync = make_sync(uow_factory, config, settings, http)

    async def gone() -> bool:
        raise OSError("the database is gone")

    monkeypatch.setattr(sync, "take_turn", gone)
    assert await sync.step() >= config.debounce.total_seconds()
    assert sync.state.failures == 1 and "the database is gone" in (sync.state.last_error or "")
    monkeypatch.undo()
    await add_leads(uow_factory, team, 2)
    assert await sync.step() == config.debounce.total_seconds() and sync.state.failures == 0
    await assert_sheet_equals_database(fake, sync, uow_factory)


async def test_a_restart_loses_nothing(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    ids = await add_leads(uow_factory, team, 4)
    first = make_sync(uow_factory, config, settings, http, lookback=timedelta(0))
    assert await first.run_once() == 4
    # Changes while the exporter is down, and a write that failed before it went down.
    async with uow_factory() as uow:
        await uow.leads.change_status(team.rop.user, ids[2], LeadStatus.REFUSED, reason="Дорого")
        await uow.commit()
    fake.fail(503)
    await first.step()
    await add_leads(uow_factory, team, 2, first=20)
    await first.end_turn()  # it stopped (a crash leaves its turn to lapse: 30 s)

    # (No look behind the cursor here: a restart would rewrite the minute before it once.)
    restarted = make_sync(uow_factory, config, settings, http, lookback=timedelta(0))
    assert await restarted.run_once() == 3  # the cursor came from the sheet: only what changed
    await assert_sheet_equals_database(fake, restarted, uow_factory)
    assert fake.row(ids[2] + 1)[10] == "Дорого"


async def test_a_thousand_changes_stay_within_the_quota(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    async with uow_factory() as uow:
        now = utcnow()
        uow.session.add_all(
            Lead(
                client_name=f"Клиент {n}",
                phone_number=f"+99890{n:07d}",
                source="Сайт",
                created_by_id=team.rop.id,
                created_at=now,
                updated_at=now - timedelta(seconds=n % 60),
            )
            for n in range(1000)
        )
        await uow.commit()
    sync = make_sync(uow_factory, config, settings, http)
    steps = 0
    while await sync.run_once():
        steps += 1
    assert steps == 2 == len(fake.writes)  # 1,000 changes, batches of 500: two writes
    await assert_sheet_equals_database(fake, sync, uow_factory)


async def test_the_rolling_window_holds_writes_back(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limited = config.model_copy(update={"writes_per_minute": 3, "batch": 1})
    await add_leads(uow_factory, team, 5)
    sync = make_sync(uow_factory, limited, settings, http, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        assert await sync.run_once() == 1
        now[0] += 1
    # Three writes in the first seconds, then a wait until the oldest left the minute.
    assert slept and slept[0] == pytest.approx(57.0)
    times = sorted(sync.state.writes)
    assert all(sum(1 for t in times if start <= t < start + 60) <= 3 for start in times)
    await assert_sheet_equals_database(fake, sync, uow_factory)


async def test_resync_rewrites_every_row(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    await add_leads(uow_factory, team, 3)
    sync = make_sync(uow_factory, config, settings, http)
    await sync.run_once()
    fake.cells.clear()
    await sync.request_resync()
    assert await sync.run_once() == 3
    await assert_sheet_equals_database(fake, sync, uow_factory)


async def add_lead_at(uow_factory: UnitOfWorkFactory, team: Team, name: str, at: datetime) -> int:
    async with uow_factory() as uow:
        lead = Lead(
            client_name=name,
            phone_number=f"+99890{abs(hash(name)) % 10**7:07d}",
            source="Сайт",
            created_by_id=team.rop.id,
            created_at=at,
            updated_at=at,
        )
        uow.session.add(lead)
        await uow.commit()
        return lead.id


async def test_a_change_committed_late_is_still_written(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    now = utcnow()
    first = await add_lead_at(uow_factory, team, "Первый", now - timedelta(seconds=30))
    await add_lead_at(uow_factory, team, "Второй", now - timedelta(seconds=10))
    sync = make_sync(uow_factory, config, settings, http)
    assert await sync.run_once() == 2
    cursor = sync.state.cursor
    # Two transactions that took their updated_at before the cursor's and committed after it was written:
    # a new lead, and a change to a lead already in the sheet.
    late = await add_lead_at(uow_factory, team, "Опоздавший", now - timedelta(seconds=15))
    async with uow_factory() as uow:
        lead = await uow.session.get(Lead, first)
        assert lead is not None
        lead.status, lead.updated_at = LeadStatus.IN_WORK, now - timedelta(seconds=20)
        await uow.commit()
    assert await sync.run_once() == 2
    assert sync.state.cursor == cursor  # nothing newer: the cursor stays
    assert fake.row(late + 1)[1] == "Опоздавший" and fake.row(first + 1)[3] == "в работе"
    await assert_sheet_equals_database(fake, sync, uow_factory)
    assert await sync.run_once() == 0  # each version once
    # Past the look-behind a change is the cursor's business alone.
    assert await make_sync(uow_factory, config, settings, http, lookback=timedelta(seconds=5)).run_once() == 0


async def test_one_instance_writes_at_a_time(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    await add_leads(uow_factory, team, 3)
    one = make_sync(uow_factory, config, settings, http)
    two = make_sync(uow_factory, config, settings, http)
    assert await one.run_once() == 3 and one.state.writer
    await add_leads(uow_factory, team, 2, first=10)
    assert await two.run_once() == 0 and two.state.writer is False  # one's turn lasts
    assert await two.step() == config.debounce.total_seconds()
    assert await one.run_once() == 2
    writes = len(fake.writes)
    # A resync asked on the instance that does not write is done by the one that does.
    await two.request_resync()
    fake.cells.clear()
    assert await two.run_once() == 0
    assert await one.run_once() == 5 and len(fake.writes) == writes + 1
    await assert_sheet_equals_database(fake, one, uow_factory)
    # one stops: two takes over from the cursor in the sheet (the minute before it rewritten once).
    await one.end_turn()
    await add_leads(uow_factory, team, 1, first=20)
    assert await two.run_once() == 6 and two.state.writer
    assert await one.run_once() == 0 and one.state.writer is False
    await assert_sheet_equals_database(fake, two, uow_factory)
    # A turn not renewed lapses (an instance that died): the other takes it.
    three = make_sync(uow_factory, config, settings, http, turn=timedelta(0))
    await two.end_turn()
    await add_leads(uow_factory, team, 1, first=30)
    assert await three.run_once() >= 1
    assert await two.run_once() >= 1 and await three.run_once() == 0
    assert fake.over_quota == 0


async def test_a_thousand_changes_in_a_minute_stay_within_the_quota(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A change every 60 ms for a (simulated) minute, the sync stepping as its loop does with a debounce
    short enough that it would write 120 times a minute: Google's quota (60) must never answer 429."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    fake.clock = lambda: now[0]
    eager = config.model_copy(update={"debounce": timedelta(seconds=0.5)})
    ids = await add_leads(uow_factory, team, 100)
    sync = make_sync(uow_factory, eager, settings, http, clock=lambda: now[0], sleep=sleep)
    next_step = 0.0
    for change in range(1000):
        now[0] = max(now[0], change * 0.06)
        async with uow_factory() as uow:
            await uow.leads.update(team.rop.user, ids[change % 100], LeadChanges(budget=1000 + change))
            await uow.commit()
        while next_step <= now[0]:
            next_step = now[0] + await sync.step()
    for _ in range(5):  # what is left after the last change
        now[0] = max(now[0], next_step)
        next_step = now[0] + await sync.step()
    assert fake.over_quota == 0 and sync.state.failures == 0
    assert all(sum(1 for t in fake.writes if start <= t < start + 60) <= 50 for start in fake.writes)
    assert len(fake.writes) > 50  # it did hit the window
    await assert_sheet_equals_database(fake, sync, uow_factory)


async def test_a_lead_closed_in_the_bot_is_closed_in_the_sheet_within_the_debounce(
    fake: FakeSheets, sheets_settings: Settings, database: Database, team: Team
) -> None:
    session = RecordingSession()
    dispatcher = create_dispatcher(sheets_settings, database, storage=MemoryStorage())
    harness = Harness(
        bot=make_bot(session),
        session=session,
        dp=dispatcher,
        settings=sheets_settings,
        uow_factory=dispatcher["uow_factory"],
    )
    async with harness.uow_factory() as uow:
        draft = LeadDraft("Клиент", "+998901112233", "Сайт", assigned_to=team.seller.id)
        lead_id = (await uow.leads.create(team.rop.user, draft)).id
        await uow.commit()
    exporter: SheetsExporter = dispatcher["sheets"]
    exporter.start()
    debounce = sheets_settings.google_sheets.debounce.total_seconds()
    try:
        for _ in range(100):
            if fake.row(lead_id + 1)[3] == "новый":
                break
            await asyncio.sleep(0.05)
        assert fake.row(lead_id + 1)[3] == "новый"
        await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.IN_WORK))
        await harness.click(team.seller, LeadStatusCB(lead_id=lead_id, code=StatusCode.CLOSED))
        closed_at = asyncio.get_running_loop().time()
        while fake.row(lead_id + 1)[3] != "закрыт":
            assert asyncio.get_running_loop().time() - closed_at < debounce + 1.0, fake.row(lead_id + 1)
            await asyncio.sleep(0.02)
    finally:
        await exporter.stop()
    async with harness.uow_factory(read_only=True) as uow:
        lead = await uow.session.get(Lead, lead_id)
        assert lead is not None and lead.status == LeadStatus.CLOSED


@pytest.fixture
def sheets_settings(settings: Settings, config: GoogleSheetsSection) -> Settings:
    return settings.model_copy(update={"google_sheets": config})


async def test_the_exporter_runs_beside_the_bot(
    fake: FakeSheets, sheets_settings: Settings, database: Database, team: Team, uow_factory: UnitOfWorkFactory
) -> None:
    async with uow_factory() as uow:
        earlier = utcnow() - timedelta(minutes=1)
        uow.session.add(
            Lead(
                client_name="Клиент",
                phone_number="+998901234567",
                source="Сайт",
                created_by_id=team.rop.id,
                created_at=earlier,
                updated_at=earlier,
            )
        )
        await uow.commit()
    dispatcher = create_dispatcher(sheets_settings, database, storage=MemoryStorage())
    exporter = dispatcher["sheets"]
    assert isinstance(exporter, SheetsExporter) and not exporter.running
    exporter.start()
    try:
        for _ in range(100):
            if fake.writes:
                break
            await asyncio.sleep(0.05)
        assert exporter.running and fake.writes and fake.row(2)[1] == "Клиент"
    finally:
        await exporter.stop()
    assert not exporter.running


async def test_sheets_command(
    fake: FakeSheets, sheets_settings: Settings, database: Database, team: Team, harness: Harness
) -> None:
    # Not configured (the harness's settings): said so.
    await harness.send(team.admin, "/sheets")
    assert "не настроена" in harness.last_text(team.admin.chat_id)

    session = RecordingSession()
    dispatcher = create_dispatcher(sheets_settings, database, storage=MemoryStorage())
    configured = Harness(
        bot=make_bot(session),
        session=session,
        dp=dispatcher,
        settings=sheets_settings,
        uow_factory=dispatcher["uow_factory"],
    )
    exporter = dispatcher["sheets"]
    exporter.sync.state.last_error = "429: <quota>"
    exporter.sync.state.failures = 2
    await configured.send(team.admin, "/sheets")
    text = configured.last_text(team.admin.chat_id)
    assert "sheet-1" in text and "не запущена" in text and "&lt;quota&gt;" in text and "подряд: 2" in text
    await configured.send(team.admin, "/sheets resync")
    assert "переписана целиком" in configured.last_text(team.admin.chat_id)
    async with configured.uow_factory(read_only=True) as uow:  # kept for whichever instance writes
        assert await uow.integrations.secrets(TURN_KEY) == {"resync": True}
    # Another instance holds the turn: /sheets says this one only waits.
    exporter._task = asyncio.create_task(asyncio.sleep(60))
    exporter.sync.state.writer = False
    await configured.send(team.admin, "/sheets")
    assert "другой запущенный экземпляр" in configured.last_text(team.admin.chat_id)
    exporter._task.cancel()
    await configured.send(team.rop, "/sheets")
    assert "только администратор" in configured.last_text(team.rop.chat_id)
    await exporter.stop()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("not json", "is not JSON"), ('{"type": "service_account"}', "no client_email")],
)
def test_a_bad_key_file_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    from pydantic import ValidationError

    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValidationError, match=message):
        GoogleSheetsSection(credentials_file=str(path), spreadsheet_id="x")
