"""/integrations (admins): each configured CRM integration's queue, links, last outcome and failures, with
"Retry failed" per integration; the remote ids on the lead's card and in the API's lead detail."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from aiogram.fsm.storage.memory import MemoryStorage
from sqlalchemy import select

from bot.commands import command_names
from bot.config import Settings
from bot.doctor import sqlite_file
from bot.factory import create_dispatcher
from db.engine import Database
from db.enums import Role
from db.integrations import AMOCRM, BITRIX24
from db.models import IntegrationJob
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import IntegrationCode, IntegrationsAction, IntegrationsCB
from tests.api_support import bearer, create_lead
from tests.conftest import ADMIN_TG, Harness, Team
from tests.fakes import RecordingSession, make_bot
from tests.test_lead_card import make_lead

AMO_ONLY_ERROR = "amo answered 400: <b>bad</b> & " + "x" * 400 + " TAIL-NOT-SHOWN"
SUCCESS_AT = datetime(2026, 11, 30, 7, 5, tzinfo=UTC)  # 12:05 in Tashkent, the CRM's time zone
ERROR_AT = datetime(2026, 11, 30, 8, 10, tzinfo=UTC)


def _settings(db_url: str, **sections: object) -> Settings:
    return Settings.model_validate(
        {"bot": {"token": "42:TEST-TOKEN"}, "database": {"url": db_url}, "access": {"admins": [ADMIN_TG]}, **sections}
    )


@pytest.fixture
def settings(db_url: str) -> Settings:
    """amoCRM and Bitrix24 configured (nothing listens there: no worker runs in these tests); Meta not."""
    return _settings(
        db_url,
        amocrm={"base_url": "http://127.0.0.1:9", "long_lived_token": "amo-token"},
        bitrix24={"webhook_url": "https://leadbot.bitrix24.ru/rest/1/abcdefgh12345678/"},
    )


async def _jobs(factory: UnitOfWorkFactory, integration: str) -> list[IntegrationJob]:
    async with factory(read_only=True) as uow:
        rows = await uow.session.scalars(
            select(IntegrationJob).where(IntegrationJob.integration == integration).order_by(IntegrationJob.id)
        )
        return list(rows.all())


async def _amo_outcomes(factory: UnitOfWorkFactory, linked: int, failed: int) -> None:
    """As the worker would record them: amo created ``linked`` (#30000001) and refused ``failed``."""
    jobs = {job.lead_id: job.id for job in await _jobs(factory, AMOCRM)}
    async with factory() as uow:
        await uow.integrations.claim([jobs[linked], jobs[failed]], lease_until=SUCCESS_AT)
        await uow.integrations.mark_done(jobs[linked], SUCCESS_AT)
        await uow.integrations.link(AMOCRM, linked, "30000001")
        await uow.integrations.mark_failed(jobs[failed], error=AMO_ONLY_ERROR)
        await uow.integrations.note_success(AMOCRM, SUCCESS_AT)
        await uow.integrations.note_error(AMOCRM, AMO_ONLY_ERROR, ERROR_AT)
        await uow.commit()


async def test_the_view_shows_each_integration_and_retries_one(harness: Harness, team: Team) -> None:
    factory = harness.uow_factory
    first = await make_lead(harness, team, assigned=team.seller, phone="+998901110001")
    second = await make_lead(harness, team, assigned=team.seller, phone="+998901110002")
    third = await make_lead(harness, team, assigned=team.seller, phone="+998901110003")
    await _amo_outcomes(factory, linked=first, failed=second)

    await harness.send(team.admin, "/integrations")
    text = harness.last_text(team.admin.chat_id)
    amo, bitrix = text.split("<b>Bitrix24</b>")
    assert amo.startswith("🔗 <b>Интеграции с CRM</b>\n\n<b>amoCRM</b>\n")
    assert "В очереди: 1, отправляются: 0" in amo  # the third lead's create
    assert "Выполнено: 1 · Не удалось: 1" in amo
    assert "Связано лидов: 1" in amo
    assert "Последний успех: 30.11.2026 12:05" in amo
    assert "Последняя ошибка (30.11.2026 13:10):\n<code>amo answered 400: &lt;b&gt;bad&lt;/b&gt; &amp; xxx" in amo
    assert "<b>bad</b>" not in text and "TAIL-NOT-SHOWN" not in text  # escaped, and shortened
    assert f"• лид #{second} · создание · попыток: 1\n<i>amo answered 400: &lt;b&gt;bad" in amo
    assert f"лид #{first}" not in amo and f"лид #{third}" not in amo
    # Bitrix24: three creates waiting, nothing sent yet.
    assert "В очереди: 3, отправляются: 0" in bitrix
    assert "Выполнено: 0 · Не удалось: 0" in bitrix and "Связано лидов: 0" in bitrix
    assert "Последний успех: —" in bitrix and "Ошибок не было." in bitrix
    retry = IntegrationsCB(action=IntegrationsAction.RETRY_FAILED, integration=IntegrationCode.AMOCRM).pack()
    refresh = IntegrationsCB(action=IntegrationsAction.REFRESH).pack()
    assert harness.last_buttons(team.admin.chat_id) == [
        ("🔁 amoCRM: повторить неудачные (1)", retry),
        ("🔄 Обновить", refresh),
    ]
    assert len(retry.encode()) <= 64

    # No worker runs beside a dispatcher built alone: the retry is written, the view redrawn.
    await harness.press(team.admin, "повторить")
    assert "amoCRM: в очередь снова поставлено 1." in harness.alerts()
    failed_job = next(job for job in await _jobs(factory, AMOCRM) if job.lead_id == second)
    assert (failed_job.status, failed_job.attempts) == ("pending", 0)
    amo = harness.last_text(team.admin.chat_id).split("<b>Bitrix24</b>")[0]
    assert "В очереди: 2, отправляются: 0" in amo and "Выполнено: 1 · Не удалось: 0" in amo
    assert harness.last_buttons(team.admin.chat_id) == [("🔄 Обновить", refresh)]
    # The Bitrix24 queue was not touched.
    assert [job.status for job in await _jobs(factory, BITRIX24)] == ["pending"] * 3


class RecordingWorker:
    """Stands in for a running SyncWorker; on SQLite it reads, as another connection, what is committed
    when it is woken."""

    def __init__(self, database_url: str) -> None:
        self.path = sqlite_file(database_url)
        self.woken = 0
        self.committed: list[str] | None = None

    def wake(self) -> None:
        self.woken += 1
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as connection:
                rows = connection.execute(
                    "SELECT status FROM integration_jobs WHERE integration = 'amocrm' ORDER BY id"
                ).fetchall()
            self.committed = [str(row[0]) for row in rows]


async def test_a_retry_wakes_the_running_worker_once_committed(harness: Harness, team: Team) -> None:
    factory = harness.uow_factory
    first = await make_lead(harness, team, phone="+998901110001")
    second = await make_lead(harness, team, phone="+998901110002")
    await _amo_outcomes(factory, linked=first, failed=second)
    url = harness.settings.database.url
    amo, bitrix = RecordingWorker(url), RecordingWorker(url)
    harness.dp["sync_workers"] = {AMOCRM: amo, BITRIX24: bitrix}  # as bot.runner sets them

    await harness.click(team.admin, IntegrationsCB(action=IntegrationsAction.RETRY_FAILED, integration="amocrm"))
    assert (amo.woken, bitrix.woken) == (1, 0)
    if amo.path is not None:  # woken after the retry was committed: the worker finds the jobs due
        assert amo.committed == ["done", "pending"]
    assert [job.status for job in await _jobs(factory, AMOCRM)] == ["done", "pending"]
    # Nothing failed any more: the next press changes nothing and wakes nobody.
    await harness.click(team.admin, IntegrationsCB(action=IntegrationsAction.RETRY_FAILED, integration="amocrm"))
    assert harness.alerts()[-1] == "amoCRM: неудачных нет."
    assert amo.woken == 1


async def test_a_button_for_an_integration_not_configured_changes_nothing(harness: Harness, team: Team) -> None:
    await harness.click(team.admin, IntegrationsCB(action=IntegrationsAction.RETRY_FAILED, integration="meta"))
    assert harness.alerts() == ["Meta (Conversions API) сейчас не настроена."]


@pytest.mark.parametrize("role", ["rop", "mop", "seller", "finance"])
async def test_integrations_are_for_admins_only(harness: Harness, team: Team, role: str) -> None:
    factory = harness.uow_factory
    first = await make_lead(harness, team, phone="+998901110001")
    second = await make_lead(harness, team, phone="+998901110002")
    await _amo_outcomes(factory, linked=first, failed=second)
    member = getattr(team, role)
    await harness.send(member, "/integrations")
    assert harness.last_text(member.chat_id) == "Интеграции с CRM доступны только администратору."
    await harness.click(member, IntegrationsCB(action=IntegrationsAction.RETRY_FAILED, integration="amocrm"))
    assert harness.alerts()[-1] == "Интеграции с CRM доступны только администратору."
    assert [job.status for job in await _jobs(factory, AMOCRM)] == ["done", "failed"]


@pytest.fixture
def plain_harness(db_url: str, database: Database) -> Iterator[Harness]:
    """The bot with no integration configured."""
    plain = _settings(db_url)
    session = RecordingSession()
    dp = create_dispatcher(plain, database, storage=MemoryStorage())
    yield Harness(bot=make_bot(session), session=session, dp=dp, settings=plain, uow_factory=dp["uow_factory"])


async def test_with_none_configured_the_view_says_where_to_read(plain_harness: Harness, team: Team) -> None:
    await plain_harness.send(team.admin, "/integrations")
    sent = plain_harness.last(team.admin.chat_id)
    assert "Ни одна интеграция не настроена" in sent.text and "<code>docs/integrations.md</code>" in sent.text
    assert sent.reply_markup is None
    await plain_harness.send(team.rop, "/integrations")
    assert plain_harness.last_text(team.rop.chat_id) == "Интеграции с CRM доступны только администратору."


async def test_admins_find_the_command_in_their_list(harness: Harness, team: Team) -> None:
    assert [role for role in Role if "integrations" in command_names(role)] == [Role.ADMIN]
    await harness.send(team.admin, "/help")
    assert "/integrations — Интеграции с CRM" in harness.last_text(team.admin.chat_id)


# ---- the remote ids on the card and in the API ---------------------------------------------------------------


async def _link(factory: UnitOfWorkFactory, integration: str, lead_id: int, remote_id: str) -> None:
    async with factory() as uow:
        assert await uow.integrations.link(integration, lead_id, remote_id)
        await uow.commit()


async def test_the_card_shows_the_linked_remote_ids(harness: Harness, team: Team) -> None:
    factory = harness.uow_factory
    both = await make_lead(harness, team, assigned=team.seller, phone="+998901110001")
    bitrix_only = await make_lead(harness, team, assigned=team.seller, phone="+998901110002")
    neither = await make_lead(harness, team, assigned=team.seller, phone="+998901110003")
    await _link(factory, AMOCRM, both, "30000001")
    await _link(factory, BITRIX24, both, "77")
    await _link(factory, BITRIX24, bitrix_only, "<78>")

    await harness.send(team.seller, f"/lead {both}")
    lines = harness.last_text(team.seller.chat_id).split("\n")
    assert "amoCRM: #30000001 · Bitrix24: #77" in lines
    await harness.send(team.seller, f"/lead {bitrix_only}")
    text = harness.last_text(team.seller.chat_id)
    assert "Bitrix24: #&lt;78&gt;" in text.split("\n") and "amoCRM" not in text
    await harness.send(team.seller, f"/lead {neither}")
    text = harness.last_text(team.seller.chat_id)
    assert "amoCRM" not in text and "Bitrix24" not in text
    async with factory(read_only=True) as uow:
        card = await uow.leads.card(team.seller.user, both)
    assert card.links == {AMOCRM: "30000001", BITRIX24: "77"}


async def test_the_api_lead_detail_carries_the_remote_ids(
    client: httpx.AsyncClient, tokens: dict[str, str], uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    lead_id = (await create_lead(client, tokens["admin"]))["id"]
    detail = (await client.get(f"/api/leads/{lead_id}", headers=bearer(tokens["admin"]))).json()
    assert detail["integrations"] == {}

    await _link(uow_factory, BITRIX24, lead_id, "77")
    await _link(uow_factory, AMOCRM, lead_id, "30000001")
    detail = (await client.get(f"/api/leads/{lead_id}", headers=bearer(tokens["admin"]))).json()
    assert detail["integrations"] == {"amocrm": "30000001", "bitrix24": "77"}
    patched = await client.patch(f"/api/leads/{lead_id}", json={"notes": "x"}, headers=bearer(tokens["admin"]))
    assert patched.json()["integrations"] == {"amocrm": "30000001", "bitrix24": "77"}
