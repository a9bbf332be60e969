"""The worker that empties one integration's queue (``db.models.IntegrationJob``) into its adapter.

One round: claim the due heads (the oldest unfinished job of each lead) in a short write unit; read the
leads as they are now in a read unit; hand the batch to the adapter with no transaction open (it waits on
the remote side, inside its rate limit); record each outcome in a second short write unit: done (and the
link a create made), retried with backoff, or failed after ``max_attempts`` or a refusal. A ``pull``'s
answer moves our lead in that same unit, as the integration (``db.integrations.apply_remote_status``),
unless a status changed here since is queued behind the pull (ours is newer: it goes there next).

A claim is a lease: a worker killed mid-send leaves its jobs ``sending`` until the lease ends, then any
worker takes them again with the attempt counted, and the adapter checks before it creates twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select

from db.errors import DomainError
from db.integrations import apply_remote_status
from db.models import Comment, Lead, MetaLeadgen, User, utcnow
from db.uow import UnitOfWork, UnitOfWorkFactory
from integrations.common import (
    Adapter,
    AuthFailed,
    JobKind,
    LeadSnapshot,
    Outcome,
    RemoteError,
    RetryLater,
    SyncJob,
)

log = logging.getLogger(__name__)


class SyncWorker:
    def __init__(
        self,
        factory: UnitOfWorkFactory,
        adapter: Adapter,
        *,
        max_attempts: int = 12,
        retry_after: timedelta = timedelta(seconds=5),
        max_retry_after: timedelta = timedelta(minutes=10),
        lease: timedelta = timedelta(minutes=2),
        poll: float = 2.0,
        turn: timedelta = timedelta(seconds=30),
    ) -> None:
        self.factory = factory
        self.adapter = adapter
        self.name = adapter.name
        self.max_attempts = max_attempts
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        self.lease = lease
        self.poll = poll
        # One sender per integration across instances (the remote rate limit is the account's): this
        # worker sends only while its turn lasts, renewed each round; another takes over when it lapses.
        self.turn = turn
        self.sender_id = uuid.uuid4().hex
        self._has_turn = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- life -----------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self.run(), name=f"integration-{self.name}")
        return self._task

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a grace period, not an I/O timeout
        """Stop taking jobs; the batch on its way finishes and is recorded (or its lease runs out)."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    async def run(self, *, until_idle: bool = False) -> None:
        """The loop; ``until_idle`` returns once nothing is due (``leadbot sync``, tests, the benchmark)."""
        try:
            while not self._stopping.is_set():
                try:
                    worked = await self.round()
                except Exception:  # the database was unavailable, say: keep going, nothing is lost
                    log.exception("%s: a round failed; retrying", self.name)
                    worked = False
                if worked:
                    continue
                wait = await self._next_wait()
                if until_idle and wait is None:
                    return
                if not self._has_turn:
                    wait = self.poll  # another instance sends: look again later
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait if wait is not None else self.poll, self.poll))
        finally:
            await self._end_turn()

    async def _end_turn(self) -> None:
        if not self._has_turn:
            return
        self._has_turn = False
        with contextlib.suppress(Exception):  # the database is gone: the turn lapses on its own
            async with self.factory() as uow:
                await uow.integrations.end_turn(self.name, self.sender_id)
                await uow.commit()

    async def _next_wait(self) -> float | None:
        """Seconds until the next job is due (0 if one is), None when the queue is empty."""
        async with self.factory(read_only=True) as uow:
            due = await uow.integrations.next_due_at(self.name)
        if due is None:
            return None
        return max(0.0, (due - utcnow()).total_seconds())

    # ---- one round ------------------------------------------------------------------------------------

    async def round(self) -> bool:
        """Send one batch; False when nothing was due."""
        claimed = await self._claim()
        if not claimed:
            return False
        jobs = await self._load(claimed)
        outcomes = await self._deliver(jobs)
        await self._record(jobs, outcomes)
        return True

    async def _claim(self) -> list[int]:
        now = utcnow()
        async with self.factory() as uow:
            self._has_turn = await uow.integrations.take_turn(self.name, self.sender_id, now=now, until=now + self.turn)
            if not self._has_turn:
                await uow.commit()
                return []
            await uow.integrations.recover_expired(self.name, now)
            heads = await uow.integrations.due_heads(self.name, now, limit=self.adapter.batch_size)
            claimed = await uow.integrations.claim([job.id for job in heads], lease_until=now + self.lease)
            await uow.commit()
        return claimed

    async def _load(self, job_ids: Sequence[int]) -> list[SyncJob]:
        async with self.factory(read_only=True) as uow:
            rows = await uow.integrations.jobs(job_ids)
            lead_ids = {row.lead_id for row in rows}
            snapshots = await _snapshots(uow, lead_ids)
            links = await uow.integrations.remote_ids(self.name, lead_ids)
            comment_ids = [int(row.payload["comment_id"]) for row in rows if row.kind == JobKind.COMMENT]
            comments = await _comments(uow, comment_ids)
        return [
            SyncJob(
                id=row.id,
                lead_id=row.lead_id,
                kind=JobKind(row.kind),
                payload=dict(row.payload),
                attempts=row.attempts,
                remote_id=links.get(row.lead_id),
                lead=snapshots.get(row.lead_id),
                comment=comments.get(int(row.payload.get("comment_id", 0))),
                first_sync=bool(row.payload.get("first_sync")),
            )
            for row in rows
        ]

    async def _deliver(self, jobs: list[SyncJob]) -> list[Outcome]:
        try:
            outcomes = await self.adapter.deliver(jobs)
        except RetryLater as exc:
            return [Outcome.failed(job.id, str(exc), retry_after=exc.retry_after) for job in jobs]
        except AuthFailed as exc:
            # Every job would fail the same way: wait the longest backoff for an admin to fix the credentials.
            wait = self.max_retry_after.total_seconds()
            return [Outcome.failed(job.id, f"authorisation: {exc}", retry_after=wait) for job in jobs]
        except RemoteError as exc:
            return [Outcome.failed(job.id, str(exc)) for job in jobs]
        except Exception as exc:  # a bug in an adapter must not lose the jobs: they are retried
            log.exception("%s: the adapter failed", self.name)
            return [Outcome.failed(job.id, f"{type(exc).__name__}: {exc}") for job in jobs]
        by_id = {outcome.job_id: outcome for outcome in outcomes}
        return [by_id.get(job.id) or Outcome.failed(job.id, "the adapter gave no outcome") for job in jobs]

    async def _record(self, jobs: list[SyncJob], outcomes: list[Outcome]) -> None:
        now = utcnow()
        attempts = {job.id: job.attempts for job in jobs}
        leads = {job.id: job.lead_id for job in jobs}
        async with self.factory() as uow:
            errors = []
            # The common case in two statements for the whole batch (links, then done): the round's
            # bookkeeping stays well inside the remote side's spacing, so the rate holds.
            plain = [outcome for outcome in outcomes if outcome.ok and outcome.remote_status is None]
            await uow.integrations.link_many(
                self.name, [(leads[o.job_id], o.remote_id) for o in plain if o.remote_id is not None]
            )
            await uow.integrations.mark_done_many([outcome.job_id for outcome in plain], now)
            for outcome in outcomes:
                if outcome.ok:
                    if outcome.remote_status is not None:
                        await self._done(uow, leads[outcome.job_id], outcome, now)
                    continue
                error = outcome.error or "failed"
                errors.append(error)
                if outcome.permanent or attempts[outcome.job_id] + 1 >= self.max_attempts:
                    await uow.integrations.mark_failed(outcome.job_id, error=error)
                else:
                    at = now + self._backoff(attempts[outcome.job_id], outcome.retry_after)
                    await uow.integrations.mark_retry(outcome.job_id, error=error, at=at)
            if any(outcome.ok for outcome in outcomes):
                await uow.integrations.note_success(self.name, now)
            if errors:
                await uow.integrations.note_error(self.name, errors[-1], now)
            await uow.commit()

    async def _done(self, uow: UnitOfWork, lead_id: int, outcome: Outcome, now: datetime) -> None:
        if outcome.remote_id is not None:
            await uow.integrations.link(self.name, lead_id, outcome.remote_id)
        if outcome.remote_status is not None and not await uow.integrations.status_queued_after(
            self.name, lead_id, outcome.job_id
        ):
            # (A status changed here after the remote side told us is newer, and on its way there: applying
            # what was read there, often the echo of an earlier change of ours, would undo it here and there.)
            events = len(uow.events)
            try:
                async with uow.session.begin_nested():
                    await apply_remote_status(uow, lead_id, outcome.remote_status, origin=self.name)
            except DomainError as exc:  # a move our rules refuse: recorded, not retried forever
                del uow.events[events:]  # what the rolled-back part announced did not happen
                await uow.integrations.mark_failed(outcome.job_id, error=f"not applied here: {exc}")
                return
        await uow.integrations.mark_done(outcome.job_id, now)

    def _backoff(self, attempts: int, retry_after: float | None) -> timedelta:
        doubling = self.retry_after * (2 ** min(attempts, 16))
        wait = min(doubling, self.max_retry_after)
        if retry_after is not None:
            wait = max(wait, timedelta(seconds=retry_after)) if attempts else timedelta(seconds=retry_after)
        return wait


async def _snapshots(uow: UnitOfWork, lead_ids: set[int]) -> dict[int, LeadSnapshot]:
    if not lead_ids:
        return {}
    rows = await uow.session.execute(
        select(Lead, User.telegram_id)
        .outerjoin(User, User.id == Lead.assigned_to_id)
        .where(Lead.id.in_(lead_ids), Lead.deleted_at.is_(None))
    )
    origins: dict[int, str] = {}
    for lead_id, leadgen_id in (
        await uow.session.execute(
            select(MetaLeadgen.lead_id, MetaLeadgen.leadgen_id)
            .where(MetaLeadgen.lead_id.in_(lead_ids))
            .order_by(MetaLeadgen.id.desc())
        )
    ).all():
        if lead_id is not None:
            origins[lead_id] = str(leadgen_id)  # the first delivery (lowest id) wins: it is written last
    snapshots: dict[int, LeadSnapshot] = {}
    for lead, telegram_id in rows.unique().all():
        snapshots[lead.id] = LeadSnapshot(
            lead_id=lead.id,
            client_name=lead.client_name,
            phone_number=lead.phone_number,
            status=lead.status,
            source=lead.source,
            budget=lead.budget,
            notes=lead.notes,
            assignee_telegram_id=telegram_id,
            created_at=lead.created_at,
            updated_at=lead.updated_at,
            leadgen_id=origins.get(lead.id),
        )
    return snapshots


async def _comments(uow: UnitOfWork, comment_ids: list[int]) -> dict[int, str]:
    if not comment_ids:
        return {}
    rows = await uow.session.execute(
        select(Comment.id, Comment.text, User.first_name)
        .join(User, User.id == Comment.created_by_id)
        .where(Comment.id.in_(comment_ids))
    )
    return {int(comment_id): f"{author}: {text}" for comment_id, text, author in rows.all()}
