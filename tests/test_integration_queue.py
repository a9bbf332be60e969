"""The integrations' durable queue (db.integrations, integrations.worker) with an in-memory remote CRM:
what is queued for which change, order per lead, no echo, retries, leases, pulls, the first sync."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select

from db.enums import LeadStatus
from db.integrations import AMOCRM, BITRIX24, META, EventSinks, IntegrationRules, apply_remote_status, queue_first_sync
from db.models import IntegrationJob, Lead, MetaLeadgen, OutboxMessage, utcnow
from db.notifications import NotificationRules
from db.repositories.integrations import JobRow
from db.repositories.leads import LeadChanges, LeadDraft
from db.uow import UnitOfWorkFactory
from integrations.common import JobKind, Outcome, RetryLater, SyncJob
from integrations.worker import SyncWorker
from tests.conftest import Team


@dataclass
class MemoryCrm:
    """A remote CRM in memory: what it was sent, in order, and the answers it is told to give."""

    name: str = AMOCRM
    batch_size: int = 50
    leads: dict[str, dict[str, object]] = field(default_factory=dict)
    sent: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, our lead id, what)
    fail: list[Exception | str] = field(default_factory=list)  # per deliver: raise it, or fail each job with it
    status_there: dict[str, LeadStatus] = field(default_factory=dict)
    calls: int = 0

    async def deliver(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        self.calls += 1
        if self.fail:
            failure = self.fail.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return [Outcome.failed(job.id, failure, permanent=failure == "refused") for job in jobs]
        outcomes = []
        for job in jobs:
            if job.kind is JobKind.CREATE:
                assert job.lead is not None
                existing = next(
                    (rid for rid, lead in self.leads.items() if lead["phone"] == job.lead.phone_number), None
                )
                if existing is not None and (job.attempts or job.first_sync):
                    outcomes.append(Outcome.done(job.id, remote_id=existing))
                    continue
                remote_id = f"r{len(self.leads) + 1}"
                self.leads[remote_id] = {"phone": job.lead.phone_number, "status": job.lead.status}
                self.sent.append(("create", job.lead_id, job.lead.client_name))
                outcomes.append(Outcome.done(job.id, remote_id=remote_id))
            elif job.kind is JobKind.UPDATE:
                if job.remote_id is None:
                    outcomes.append(Outcome.failed(job.id, "not yet created there"))
                    continue
                assert job.lead is not None
                self.leads[job.remote_id]["status"] = job.lead.status
                self.sent.append(("update", job.lead_id, f"{job.lead.status}|{job.lead.budget}"))
                outcomes.append(Outcome.done(job.id))
            elif job.kind is JobKind.COMMENT:
                self.sent.append(("comment", job.lead_id, job.comment or ""))
                outcomes.append(Outcome.done(job.id))
            elif job.kind is JobKind.PULL:
                assert job.remote_id is not None
                outcomes.append(Outcome.done(job.id, remote_status=self.status_there[job.remote_id]))
            else:
                outcomes.append(Outcome.failed(job.id, "not ours", permanent=True))
        return outcomes

    async def aclose(self) -> None:
        return None


def factory_with(uow_factory: UnitOfWorkFactory, *enabled: str) -> UnitOfWorkFactory:
    sink = EventSinks(NotificationRules(uow_factory.settings), IntegrationRules(set(enabled)))
    return UnitOfWorkFactory(uow_factory.database, uow_factory.settings, sink)


def worker(factory: UnitOfWorkFactory, crm: MemoryCrm, **kwargs: object) -> SyncWorker:
    options: dict[str, object] = {"retry_after": timedelta(0), "max_retry_after": timedelta(0)}
    options.update(kwargs)
    return SyncWorker(factory, crm, **options)  # type: ignore[arg-type]


async def new_lead(factory: UnitOfWorkFactory, team: Team, phone: str = "+998901234567", name: str = "Алишер") -> int:
    async with factory() as uow:
        lead = await uow.leads.create(
            team.mop.user, LeadDraft(client_name=name, phone_number=phone, source="Сайт", assigned_to=team.seller.id)
        )
        await uow.commit()
        return lead.id


async def jobs(factory: UnitOfWorkFactory, integration: str | None = None) -> list[IntegrationJob]:
    async with factory(read_only=True) as uow:
        query = select(IntegrationJob).order_by(IntegrationJob.id)
        if integration:
            query = query.where(IntegrationJob.integration == integration)
        return list((await uow.session.scalars(query)).all())


async def test_each_change_is_queued_once_for_each_configured_crm(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory, AMOCRM, BITRIX24)
    lead_id = await new_lead(factory, team)
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.leads.update(team.seller.user, lead_id, LeadChanges(budget=90000))
        await uow.leads.update(team.seller.user, lead_id, LeadChanges(budget=90000))  # no change: nothing queued
        await uow.leads.add_comment(team.seller.user, lead_id, "Перезвонить в 18:00")
        await uow.leads.assign(team.rop.user, lead_id, team.seller2.id)
        await uow.commit()
    queued = [(job.integration, job.kind) for job in await jobs(factory)]
    for name in (AMOCRM, BITRIX24):
        assert [kind for integration, kind in queued if integration == name] == [
            "create",
            "update",
            "update",
            "comment",
            "update",
        ]
    # The same change announced again queues nothing more (the idempotency key is the history row).
    async with factory() as uow:
        await IntegrationRules({AMOCRM}).__call__(uow, [])
        await uow.commit()
    assert len(await jobs(factory)) == 10


async def test_nothing_is_queued_without_an_integration(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory)
    await new_lead(factory, team)
    assert await jobs(factory) == []


async def test_a_lead_reaches_the_crm_with_its_changes_in_order(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    first = await new_lead(factory, team, "+998901111111", "Первый")
    second = await new_lead(factory, team, "+998902222222", "Второй")
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, first, LeadStatus.IN_WORK)
        await uow.leads.add_comment(team.seller.user, first, "звонил")
        await uow.leads.change_status(team.seller.user, first, LeadStatus.CLOSED)
        await uow.commit()
    crm = MemoryCrm()
    await worker(factory, crm).run(until_idle=True)
    assert [(kind, lead) for kind, lead, _ in crm.sent if lead == first] == [
        ("create", first),
        ("update", first),
        ("comment", first),
        ("update", first),
    ]
    assert ("create", second, "Второй") in crm.sent
    # One job per lead per round: the first round sent both creates together, then the rest of the first's.
    assert crm.calls == 4
    assert {job.status for job in await jobs(factory)} == {"done"}
    async with factory(read_only=True) as uow:
        assert await uow.integrations.remote_ids(AMOCRM, [first, second]) == {first: "r1", second: "r2"}
        overview = await uow.integrations.overview(AMOCRM)
    assert overview.counts["done"] == 5 and overview.linked == 2 and overview.last_success_at is not None
    assert crm.leads["r1"]["status"] == LeadStatus.CLOSED


async def test_a_failure_is_retried_and_blocks_only_its_own_lead(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    lead_id = await new_lead(factory, team)
    crm = MemoryCrm(fail=[RetryLater("429 Too Many Requests", retry_after=0), "503 outage"])
    sync = worker(factory, crm)
    assert await sync.round()  # the 429: back to pending
    assert await sync.round()  # the outage: back to pending
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.commit()
    await sync.run(until_idle=True)
    assert [kind for kind, _, _ in crm.sent] == ["create", "update"]  # created once, then moved
    done = await jobs(factory)
    assert done[0].attempts == 3 and done[0].last_error is None
    async with factory(read_only=True) as uow:
        overview = await uow.integrations.overview(AMOCRM)
    assert overview.last_error == "503 outage"


async def test_a_refusal_fails_at_once_and_an_admin_can_queue_it_again(
    uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    await new_lead(factory, team)
    crm = MemoryCrm(fail=["refused"])
    sync = worker(factory, crm)
    await sync.run(until_idle=True)
    [job] = await jobs(factory)
    assert job.status == "failed" and job.last_error == "refused" and crm.sent == []
    async with factory() as uow:
        assert await uow.integrations.retry_failed(AMOCRM, utcnow()) == 1
        await uow.commit()
    await sync.run(until_idle=True)
    assert [kind for kind, _, _ in crm.sent] == ["create"]


async def test_max_attempts_end_in_failed(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    await new_lead(factory, team)
    crm = MemoryCrm(fail=["500"] * 10)
    await worker(factory, crm, max_attempts=3).run(until_idle=True)
    [job] = await jobs(factory)
    assert (job.status, job.attempts, crm.calls) == ("failed", 3, 3)


async def test_a_worker_killed_mid_send_leaves_the_job_to_the_next_which_links_instead_of_creating_twice(
    uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    lead_id = await new_lead(factory, team)
    crm = MemoryCrm()

    class Dies(MemoryCrm):
        async def deliver(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
            await crm.deliver(jobs)  # it reached the remote side...
            raise asyncio.CancelledError  # ...and the process died before recording it

    with pytest.raises(asyncio.CancelledError):
        await worker(factory, Dies(), lease=timedelta(seconds=0), turn=timedelta(seconds=0)).round()
    [job] = await jobs(factory)
    assert job.status == "sending"
    await worker(factory, crm).run(until_idle=True)  # the lease is over: taken again
    assert [kind for kind, _, _ in crm.sent] == ["create"] and len(crm.leads) == 1
    async with factory(read_only=True) as uow:
        assert await uow.integrations.remote_ids(AMOCRM, [lead_id]) == {lead_id: "r1"}


async def test_a_status_moved_there_moves_ours_tells_the_salesperson_and_is_not_sent_back(
    uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    factory = factory_with(uow_factory, AMOCRM, BITRIX24)
    lead_id = await new_lead(factory, team)
    crm = MemoryCrm()
    await worker(factory, crm).run(until_idle=True)
    await worker(factory, MemoryCrm(name=BITRIX24)).run(until_idle=True)
    # The remote side closed it (a jump our rules make in two steps).
    crm.status_there["r1"] = LeadStatus.CLOSED
    async with factory() as uow:
        await uow.integrations.enqueue_many([JobRow(AMOCRM, lead_id, "pull", "pull-1")])
        await uow.commit()
    await worker(factory, crm).run(until_idle=True)
    async with factory(read_only=True) as uow:
        lead = await uow.session.get(Lead, lead_id)
        notices = (
            await uow.session.scalars(select(OutboxMessage).where(OutboxMessage.chat_id == team.seller.chat_id))
        ).all()
    assert lead is not None and lead.status == LeadStatus.CLOSED
    assert any(n.kind == "lead_status" and n.payload.get("new") == LeadStatus.CLOSED for n in notices), [
        (n.kind, n.payload) for n in notices
    ]
    queued = await jobs(factory)
    # Two moves here (в работе, закрыт): Bitrix24 hears of both, amoCRM of neither (it made them).
    assert [job.kind for job in queued if job.integration == AMOCRM] == ["create", "pull"]
    assert [job.kind for job in queued if job.integration == BITRIX24] == ["create", "update", "update"]
    # Told the status it has already: nothing happens.
    async with factory() as uow:
        assert not await apply_remote_status(uow, lead_id, LeadStatus.CLOSED, origin=AMOCRM)


async def test_a_pull_does_not_undo_a_status_changed_here_after_it_was_queued(
    uow_factory: UnitOfWorkFactory, team: Team
) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    echoed = await new_lead(factory, team, "+998901111111", "Эхо")
    moved = await new_lead(factory, team, "+998902222222", "Сдвинут")
    async with factory() as uow:
        for lead_id in (echoed, moved):
            await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.commit()
    crm = MemoryCrm()
    await worker(factory, crm).run(until_idle=True)
    # The CRM tells of both leads: one only echoes our own move (в работе), the other was closed there.
    crm.status_there |= {"r1": LeadStatus.IN_WORK, "r2": LeadStatus.CLOSED}
    async with factory() as uow:
        await uow.integrations.enqueue_many(
            [JobRow(AMOCRM, echoed, "pull", "pull-echo"), JobRow(AMOCRM, moved, "pull", "pull-moved")]
        )
        await uow.commit()
    # Before the pulls are made, the first is closed here; the second only gets a budget.
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, echoed, LeadStatus.CLOSED)
        await uow.leads.update(team.seller.user, moved, LeadChanges(budget=5000))
        await uow.commit()
    await worker(factory, crm).run(until_idle=True)
    async with factory(read_only=True) as uow:
        rows = await uow.session.scalars(select(Lead).where(Lead.id.in_([echoed, moved])))
        statuses = {lead.id: lead.status for lead in rows.all()}
    # The close made here is newer than the echo: it stays, and goes there. The budget does not hold the
    # move made there back: it comes here, and the update then sends it along.
    assert statuses == {echoed: LeadStatus.CLOSED, moved: LeadStatus.CLOSED}
    assert crm.leads["r1"]["status"] == crm.leads["r2"]["status"] == LeadStatus.CLOSED
    assert {job.status for job in await jobs(factory)} == {"done"}


async def test_a_move_our_rules_refuse_is_recorded_not_retried(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory, AMOCRM)
    lead_id = await new_lead(factory, team)
    crm = MemoryCrm()
    await worker(factory, crm).run(until_idle=True)
    async with factory() as uow:
        await uow.leads.change_status(team.seller.user, lead_id, LeadStatus.IN_WORK)
        await uow.commit()
    await worker(factory, crm).run(until_idle=True)
    crm.status_there["r1"] = LeadStatus.NEW  # back to new: not a move from в работе
    async with factory() as uow:
        await uow.integrations.enqueue_many([JobRow(AMOCRM, lead_id, "pull", "pull-2")])
        await uow.commit()
    await worker(factory, crm).run(until_idle=True)
    pull = (await jobs(factory))[-1]
    assert pull.status == "failed" and pull.last_error and "not applied here" in pull.last_error
    async with factory(read_only=True) as uow:
        lead = await uow.session.get(Lead, lead_id)
    assert lead is not None and lead.status == LeadStatus.IN_WORK


async def test_the_first_sync_links_by_phone_and_is_resumable(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    plain = factory_with(uow_factory)  # leads made before the integration was configured
    ids = [await new_lead(plain, team, f"+99890{n:07d}", f"Клиент {n}") for n in range(5)]
    factory = factory_with(uow_factory, AMOCRM)
    crm = MemoryCrm()
    crm.leads["x9"] = {"phone": "+998900000002", "status": LeadStatus.NEW}  # already there
    async with factory() as uow:
        assert await queue_first_sync(uow, AMOCRM) == 5
        await uow.commit()
    crm.batch_size = 2
    sync = worker(factory, crm)
    assert await sync.round()  # interrupted after one batch
    async with factory() as uow:
        assert await queue_first_sync(uow, AMOCRM) == 0  # run again: nothing queued twice
        await uow.commit()
    await sync.run(until_idle=True)
    async with factory(read_only=True) as uow:
        links = await uow.integrations.remote_ids(AMOCRM, ids)
    assert len(links) == 5 and links[ids[2]] == "x9"
    assert len([kind for kind, _, _ in crm.sent if kind == "create"]) == 4


async def test_meta_hears_the_stages_of_leads_from_its_forms_only(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    factory = factory_with(uow_factory, META)
    from_meta = await new_lead(factory, team, "+998901111111")
    other = await new_lead(factory, team, "+998902222222")
    async with factory() as uow:
        uow.session.add(MetaLeadgen(leadgen_id="LG1", lead_id=from_meta, status="done"))
        await uow.leads.change_status(team.seller.user, from_meta, LeadStatus.IN_WORK)
        await uow.leads.change_status(team.seller.user, other, LeadStatus.IN_WORK)
        await uow.commit()
    queued = await jobs(factory, META)
    assert [(job.lead_id, job.kind, job.payload["status"]) for job in queued] == [
        (from_meta, "stage", LeadStatus.IN_WORK)
    ]
    async with factory() as uow:
        assert await queue_first_sync(uow, META) == 1
        await uow.commit()


async def test_one_sender_per_integration_across_instances(uow_factory: UnitOfWorkFactory, team: Team) -> None:
    """Two instances' workers: the remote rate limit is the account's, so only one sends at a time;
    when that one dies (its turn is not renewed), the other takes over."""
    factory = factory_with(uow_factory, AMOCRM)
    await new_lead(factory, team, "+998901111111")
    first, second = MemoryCrm(), MemoryCrm()
    one = worker(factory, first, turn=timedelta(seconds=1))
    other = worker(factory, second, turn=timedelta(seconds=1))
    assert await one.round()
    await new_lead(factory, team, "+998902222222")
    assert not await other.round()  # the first one's turn lasts
    assert second.calls == 0
    await asyncio.sleep(1.1)  # the first instance is gone: its turn lapses
    assert await other.round()
    assert (first.calls, second.calls) == (1, 1)
    assert not await one.round()  # and now the second one holds it
