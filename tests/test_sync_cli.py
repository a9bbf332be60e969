"""``leadbot sync <integration>``: the first sync of a CRM integration against the fake amoCRM over real
HTTP. Leads that were there before the integration are linked by phone where amo has the client already and
created otherwise; a run stopped half-way is taken up by the next one; a second run queues nothing."""

from __future__ import annotations

import asyncio
import io
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import sync_integration
from bot.config import Settings
from bot.factory import create_uow_factory
from bot.integrations import create_sync_worker, first_sync
from db.engine import open_database
from db.integrations import AMOCRM
from db.models import IntegrationJob, IntegrationLink
from db.repositories import LeadDraft
from db.uow import UnitOfWorkFactory
from tests.conftest import ADMIN_TG, Team
from tests.fake_amocrm import ACCESS_TOKEN, FakeAmoCrm
from tests.test_cli import LEADBOT, environment, leadbot, write_config

PHONES = ["+998901110001", "+998901110002", "+998901110003"]


@pytest.fixture
async def amo() -> AsyncIterator[FakeAmoCrm]:
    async with FakeAmoCrm() as fake:
        yield fake


def amo_settings(db_url: str, amo: FakeAmoCrm) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": db_url},
            "access": {"admins": [ADMIN_TG]},
            "amocrm": {"base_url": amo.base_url, "long_lived_token": ACCESS_TOKEN},
        }
    )


async def existing_leads(uow_factory: UnitOfWorkFactory, team: Team) -> list[int]:
    """Leads made before amoCRM was configured (the fixture's settings have no integration): none is queued."""
    ids = []
    async with uow_factory() as uow:
        for n, phone in enumerate(PHONES, start=1):
            lead = await uow.leads.create(team.mop.user, LeadDraft(f"Клиент {n}", phone, "Instagram"))
            ids.append(lead.id)
        deleted = await uow.leads.create(team.mop.user, LeadDraft("Удалённый", "+998901110009", "Instagram"))
        await uow.leads.delete(team.admin.user, deleted.id)
        await uow.commit()
    async with uow_factory(read_only=True) as uow:
        assert await uow.integrations.counts(AMOCRM) == {"pending": 0, "sending": 0, "done": 0, "failed": 0}
    return ids


async def links(uow_factory: UnitOfWorkFactory) -> dict[int, str]:
    async with uow_factory(read_only=True) as uow:
        rows = await uow.session.execute(
            select(IntegrationLink.lead_id, IntegrationLink.remote_id).where(IntegrationLink.integration == AMOCRM)
        )
        return {int(lead_id): str(remote_id) for lead_id, remote_id in rows.all()}


async def test_sync_links_by_phone_creates_the_rest_and_a_second_run_queues_nothing(
    db_url: str, uow_factory: UnitOfWorkFactory, team: Team, amo: FakeAmoCrm, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, third = await existing_leads(uow_factory, team)
    there = amo.add_lead("Клиент 1 (в amo)", PHONES[0])  # the client is in amo already

    settings = amo_settings(db_url, amo)
    assert await sync_integration(settings, AMOCRM, every=0.05) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "amocrm: 3 leads queued for the first sync"  # the deleted lead is not
    assert out[-1] == "amocrm: first sync finished: 3 done, 0 failed; 3 leads linked"

    linked = await links(uow_factory)
    assert linked[first] == str(there)
    created = {int(linked[second]), int(linked[third])}
    assert created <= set(amo.leads) and there not in created
    assert {amo.leads[remote]["phone"] for remote in created} == {PHONES[1], PHONES[2]}
    assert len(amo.leads) == 3  # nothing twice
    assert amo.count("/leads/complex", "POST") == 1  # the two new ones in one batch

    assert await sync_integration(settings, AMOCRM, every=0.05) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "amocrm: 0 leads queued for the first sync",
        "amocrm: first sync finished: 0 done, 0 failed; 3 leads linked",
    ]
    assert amo.count("/leads/complex", "POST") == 1 and len(amo.leads) == 3


async def test_a_stopped_sync_goes_on_where_it_stopped(
    db_url: str, uow_factory: UnitOfWorkFactory, team: Team, amo: FakeAmoCrm
) -> None:
    leads = await existing_leads(uow_factory, team)
    settings = amo_settings(db_url, amo)
    database = open_database(db_url)
    factory = create_uow_factory(settings, database)
    try:
        # One lead a round, and amo slow to answer: Ctrl-C (``stop``) lands while the first is on its way.
        worker = create_sync_worker(settings, factory, AMOCRM)
        worker.adapter.batch_size = 1
        amo.delay = 0.3
        stop = asyncio.Event()

        async def press_ctrl_c() -> None:
            while not amo.requests:  # noqa: ASYNC110 - the fake records its requests; it signals nothing
                await asyncio.sleep(0.01)
            stop.set()

        presser = asyncio.create_task(press_ctrl_c())
        out = io.StringIO()
        report = await first_sync(settings, factory, AMOCRM, out=out, every=0.05, stop=stop, worker=worker)
        await presser
        assert (report.queued, report.done, report.left, report.stopped, report.exit_code) == (3, 1, 2, True, 130)
        assert out.getvalue().splitlines()[-1] == (
            "amocrm: stopped: 1 done, 0 failed, 2 left; run `leadbot sync amocrm` again to go on"
        )
        # The batch on its way was finished and recorded: nothing is left claimed.
        async with factory(read_only=True) as uow:
            statuses = (await uow.session.scalars(select(IntegrationJob.status).order_by(IntegrationJob.id))).all()
        assert statuses == ["done", "pending", "pending"]
        assert list(await links(uow_factory)) == [leads[0]]

        amo.delay = 0.0
        out = io.StringIO()
        report = await first_sync(settings, factory, AMOCRM, out=out, every=0.05)
        assert (report.queued, report.done, report.left, report.exit_code) == (0, 2, 0, 0)
        lines = out.getvalue().splitlines()
        assert lines[0] == "amocrm: 0 leads queued for the first sync"
        assert lines[-1] == "amocrm: first sync finished: 2 done, 0 failed; 3 leads linked"
        assert sorted(await links(uow_factory)) == leads
        assert len(amo.leads) == 3
    finally:
        await database.dispose()


async def test_progress_is_printed_while_it_runs(
    db_url: str, uow_factory: UnitOfWorkFactory, team: Team, amo: FakeAmoCrm
) -> None:
    await existing_leads(uow_factory, team)
    settings = amo_settings(db_url, amo)
    database = open_database(db_url)
    try:
        amo.delay = 0.2
        out = io.StringIO()
        await first_sync(settings, create_uow_factory(settings, database), AMOCRM, out=out, every=0.05)
    finally:
        await database.dispose()
    progress = out.getvalue().splitlines()[1:-1]
    assert progress and all(
        line.startswith("amocrm: ") and " done, " in line and " to go, " in line for line in progress
    )
    assert progress[0].endswith("0 done, 3 to go, 0 failed")


# ---- the command itself --------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_the_command_syncs_and_refuses_what_is_not_configured(
    tmp_path: Path, db_url: str, uow_factory: UnitOfWorkFactory, team: Team, amo: FakeAmoCrm
) -> None:
    await existing_leads(uow_factory, team)
    config = write_config(
        tmp_path / "config.toml",
        f'[database]\nurl = "{db_url}"\n\n[amocrm]\nbase_url = "{amo.base_url}"\nlong_lived_token = "{ACCESS_TOKEN}"\n',
    )

    refused = await leadbot("sync", "bitrix24", "--config", str(config), cwd=tmp_path)
    assert refused.code == 2 and refused.out == ""
    assert refused.problem == "error: bitrix24 is not configured: set up its [bitrix24] section (docs/integrations.md)"

    result = await leadbot("sync", "amocrm", "--config", str(config), cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.lines == [f"config: {config} (from --config)"]  # no log lines, no traceback
    assert result.out.splitlines()[0] == "amocrm: 3 leads queued for the first sync"
    assert result.out.splitlines()[-1] == "amocrm: first sync finished: 3 done, 0 failed; 3 leads linked"
    assert len(await links(uow_factory)) == 3 and len(amo.leads) == 3


@pytest.mark.sqlite_only
async def test_ctrl_c_twice_stops_the_command_at_once(
    tmp_path: Path, db_url: str, uow_factory: UnitOfWorkFactory, team: Team, amo: FakeAmoCrm
) -> None:
    await existing_leads(uow_factory, team)
    config = write_config(
        tmp_path / "config.toml",
        f'[database]\nurl = "{db_url}"\n\n[amocrm]\nbase_url = "{amo.base_url}"\nlong_lived_token = "{ACCESS_TOKEN}"\n',
    )
    amo.delay = 30.0  # amo hangs: the batch on its way would take long
    assert LEADBOT is not None
    process = await asyncio.create_subprocess_exec(
        LEADBOT,
        "sync",
        "amocrm",
        "--config",
        str(config),
        cwd=tmp_path,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while not amo.requests:  # noqa: ASYNC110 - the fake records its requests; it signals nothing
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        async with asyncio.timeout(30):
            line = await process.stderr.readline()
            while b"stopping after the batch" not in line:
                line = await process.stderr.readline()
                assert line, "the first Ctrl-C was not heard"
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130
    assert "Traceback" not in err.decode()
    assert "amocrm: stopped at once; jobs being sent are taken again after their lease" in err.decode()
    assert out.decode().splitlines() == ["amocrm: 3 leads queued for the first sync"]
