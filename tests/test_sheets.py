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
from bot.sheets import CURSOR_CELL, ServiceAccount, SheetsClient, SheetsExporter, SheetsSync, parse_cursor
from bot.texts import texts_for
from db.engine import Database
from db.enums import LeadStatus
from db.exports import changed_since
from db.models import Lead, utcnow
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
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
    return SheetsSync(
        uow_factory, config, settings.crm, texts_for("ru"), client, backoff_base=0.01, settle=timedelta(0), **kw
    )


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


async def test_a_restart_loses_nothing(
    fake: FakeSheets,
    config: GoogleSheetsSection,
    settings: Settings,
    http: httpx.AsyncClient,
    team: Team,
    uow_factory: UnitOfWorkFactory,
) -> None:
    ids = await add_leads(uow_factory, team, 4)
    first = make_sync(uow_factory, config, settings, http)
    assert await first.run_once() == 4
    # Changes while the exporter is down, and a write that failed before it went down.
    async with uow_factory() as uow:
        await uow.leads.change_status(team.rop.user, ids[2], LeadStatus.REFUSED, reason="Дорого")
        await uow.commit()
    fake.fail(503)
    await first.step()
    await add_leads(uow_factory, team, 2, first=20)

    restarted = make_sync(uow_factory, config, settings, http)
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
    sync.request_resync()
    assert await sync.run_once() == 3
    await assert_sheet_equals_database(fake, sync, uow_factory)


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
    assert exporter.sync._resync
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
