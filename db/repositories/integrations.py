"""The CRM integrations' queue, links and state (``db.models.IntegrationJob`` / ``IntegrationLink`` /
``IntegrationState``). Nothing here commits: the caller's unit of work does.

Order per lead: only the oldest unfinished (pending or sending) job of a lead is ever due, so a lead's
changes reach the remote side in the order they were made; a failed job stops blocking its lead (an admin
sees it in /integrations and may queue it again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import IntegrationJob, IntegrationLink, IntegrationState, utcnow
from db.sql import insert_or_skip

# The integrations by name (the ``integration`` column); ``db.integrations`` says what each one gets.
AMOCRM, BITRIX24, META = "amocrm", "bitrix24", "meta"
CRM_INTEGRATIONS = (AMOCRM, BITRIX24)  # the two-way ones: leads, changes and comments; their leads are linked
INTEGRATIONS = (AMOCRM, BITRIX24, META)

ERROR_LIMIT = 1000
PENDING, SENDING, DONE, FAILED = "pending", "sending", "done", "failed"
UNFINISHED = (PENDING, SENDING)

_JOBS = cast(Table, IntegrationJob.__table__)
_LINKS = cast(Table, IntegrationLink.__table__)
_STATE = cast(Table, IntegrationState.__table__)


# A lead's links; the names are listed so that it seeks the (integration, lead_id) index, not every link.
LINKS_OF_LEAD = select(IntegrationLink.integration, IntegrationLink.remote_id).where(
    IntegrationLink.integration.in_(CRM_INTEGRATIONS), IntegrationLink.lead_id == bindparam("lead_id")
)


@dataclass(slots=True, frozen=True)
class JobRow:
    integration: str
    lead_id: int
    kind: str
    key: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class IntegrationOverview:
    integration: str
    counts: dict[str, int]
    failed: list[IntegrationJob]
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    linked: int


class IntegrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ---- queueing (in the transaction of the change) ------------------------------------------------------

    async def enqueue_many(self, rows: Sequence[JobRow]) -> None:
        """Queue jobs in one statement; a key already queued inserts nothing (the unique index decides)."""
        if not rows:
            return
        now = utcnow()
        values = [
            {
                "integration": row.integration,
                "lead_id": row.lead_id,
                "kind": row.kind,
                "payload": row.payload,
                "idempotency_key": row.key,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for row in rows
        ]
        await self.session.execute(insert_or_skip(self.session, _JOBS, [IntegrationJob.idempotency_key]), values)

    # ---- the worker ---------------------------------------------------------------------------------------

    async def recover_expired(self, integration: str, now: datetime) -> int:
        """Jobs whose worker died while sending (the lease ran out) are pending again, counted as an
        attempt: the send may have reached the remote side, which the adapter then checks (link by phone)."""
        result = await self.session.execute(
            update(IntegrationJob)
            .where(
                IntegrationJob.integration == integration,
                IntegrationJob.status == SENDING,
                IntegrationJob.next_attempt_at <= now,
            )
            .values(status=PENDING, attempts=IntegrationJob.attempts + 1, last_error="interrupted while sending")
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def due_heads(self, integration: str, now: datetime, *, limit: int) -> list[IntegrationJob]:
        """The oldest unfinished job of each lead, where that job is pending and due; oldest first."""
        heads = (
            select(func.min(IntegrationJob.id))
            .where(IntegrationJob.integration == integration, IntegrationJob.status.in_(UNFINISHED))
            .group_by(IntegrationJob.lead_id)
        )
        rows = await self.session.scalars(
            select(IntegrationJob)
            .where(
                IntegrationJob.id.in_(heads),
                IntegrationJob.status == PENDING,
                IntegrationJob.next_attempt_at <= now,
            )
            .order_by(IntegrationJob.id)
            .limit(limit)
        )
        return list(rows.all())

    async def claim(self, job_ids: Sequence[int], *, lease_until: datetime) -> list[int]:
        """pending → sending for those still pending: the ids this worker won (another instance may take
        the rest)."""
        if not job_ids:
            return []
        result = await self.session.execute(
            update(IntegrationJob)
            .where(IntegrationJob.id.in_(list(job_ids)), IntegrationJob.status == PENDING)
            .values(status=SENDING, next_attempt_at=lease_until)
            .returning(IntegrationJob.id)
            .execution_options(synchronize_session=False)
        )
        return sorted(int(row_id) for row_id in result.scalars().all())

    async def jobs(self, job_ids: Iterable[int]) -> list[IntegrationJob]:
        ids = list(job_ids)
        if not ids:
            return []
        rows = await self.session.scalars(select(IntegrationJob).where(IntegrationJob.id.in_(ids)))
        return sorted(rows.all(), key=lambda job: job.id)

    async def mark_done(self, job_id: int, now: datetime) -> None:
        await self._set(
            job_id, SENDING, status=DONE, done_at=now, last_error=None, attempts=IntegrationJob.attempts + 1
        )

    async def mark_done_many(self, job_ids: Sequence[int], now: datetime) -> None:
        if not job_ids:
            return
        await self.session.execute(
            update(IntegrationJob)
            .where(IntegrationJob.id.in_(list(job_ids)), IntegrationJob.status == SENDING)
            .values(status=DONE, done_at=now, last_error=None, attempts=IntegrationJob.attempts + 1)
            .execution_options(synchronize_session=False)
        )

    async def mark_retry(self, job_id: int, *, error: str, at: datetime, count_attempt: bool = True) -> None:
        values: dict[str, Any] = {"status": PENDING, "next_attempt_at": at, "last_error": error[:ERROR_LIMIT]}
        if count_attempt:
            values["attempts"] = IntegrationJob.attempts + 1
        await self._set(job_id, SENDING, **values)

    async def mark_failed(self, job_id: int, *, error: str) -> None:
        await self._set(
            job_id, SENDING, status=FAILED, last_error=error[:ERROR_LIMIT], attempts=IntegrationJob.attempts + 1
        )

    async def unclaim(self, job_id: int, at: datetime) -> None:
        """Claimed, then not sent (the worker stopped first): pending again, no attempt counted."""
        await self._set(job_id, SENDING, status=PENDING, next_attempt_at=at)

    async def _set(self, job_id: int, expected: str, **values: Any) -> None:
        await self.session.execute(
            update(IntegrationJob)
            .where(IntegrationJob.id == job_id, IntegrationJob.status == expected)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def status_queued_after(self, integration: str, lead_id: int, job_id: int) -> bool:
        """Whether a status change of the lead, queued for the integration after job ``job_id``, is still
        to be sent (its update job carries ``{"status": …}``)."""
        payloads = await self.session.scalars(
            select(IntegrationJob.payload).where(
                IntegrationJob.integration == integration,
                IntegrationJob.lead_id == lead_id,
                IntegrationJob.kind == "update",
                IntegrationJob.status.in_(UNFINISHED),
                IntegrationJob.id > job_id,
            )
        )
        return any("status" in payload for payload in payloads.all())

    async def next_due_at(self, integration: str) -> datetime | None:
        return await self.session.scalar(
            select(func.min(IntegrationJob.next_attempt_at)).where(
                IntegrationJob.integration == integration, IntegrationJob.status.in_(UNFINISHED)
            )
        )

    async def unfinished(self, integration: str) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(IntegrationJob)
                .where(IntegrationJob.integration == integration, IntegrationJob.status.in_(UNFINISHED))
            )
            or 0
        )

    # ---- admins -------------------------------------------------------------------------------------------

    async def counts(self, integration: str) -> dict[str, int]:
        """The integration's jobs by status (``pending``, ``sending``, ``done``, ``failed``)."""
        counts = {status: 0 for status in (PENDING, SENDING, DONE, FAILED)}
        for status, count in (
            await self.session.execute(
                select(IntegrationJob.status, func.count())
                .where(IntegrationJob.integration == integration)
                .group_by(IntegrationJob.status)
            )
        ).all():
            counts[str(status)] = int(count)
        return counts

    async def linked(self, integration: str) -> int:
        """How many of our leads are linked to one there."""
        linked = await self.session.scalar(
            select(func.count()).select_from(IntegrationLink).where(IntegrationLink.integration == integration)
        )
        return int(linked or 0)

    async def overview(self, integration: str, *, failed: int = 5) -> IntegrationOverview:
        counts = await self.counts(integration)
        failed_jobs = await self.session.scalars(
            select(IntegrationJob)
            .where(IntegrationJob.integration == integration, IntegrationJob.status == FAILED)
            .order_by(IntegrationJob.id.desc())
            .limit(failed)
        )
        state = await self.session.get(IntegrationState, integration)
        return IntegrationOverview(
            integration=integration,
            counts=counts,
            failed=list(failed_jobs.all()),
            last_success_at=state.last_success_at if state else None,
            last_error=state.last_error if state else None,
            last_error_at=state.last_error_at if state else None,
            linked=await self.linked(integration),
        )

    async def retry_failed(self, integration: str, now: datetime) -> int:
        """Every failed job of the integration is queued again, with its attempts reset."""
        result = await self.session.execute(
            update(IntegrationJob)
            .where(IntegrationJob.integration == integration, IntegrationJob.status == FAILED)
            .values(status=PENDING, attempts=0, next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # ---- links --------------------------------------------------------------------------------------------

    async def link(self, integration: str, lead_id: int, remote_id: str) -> bool:
        """Link our lead to the remote one; False when either side is linked already (kept as it was)."""
        stmt = insert_or_skip(self.session, _LINKS, None).returning(IntegrationLink.id)
        row_id = await self.session.scalar(
            stmt,
            {"integration": integration, "lead_id": lead_id, "remote_id": remote_id, "created_at": utcnow()},
        )
        return row_id is not None

    async def link_many(self, integration: str, pairs: Sequence[tuple[int, str]]) -> None:
        """``link`` for many (lead, remote lead) pairs in one statement; a side linked already is kept."""
        if not pairs:
            return
        now = utcnow()
        await self.session.execute(
            insert_or_skip(self.session, _LINKS, None),
            [
                {"integration": integration, "lead_id": lead_id, "remote_id": remote_id, "created_at": now}
                for lead_id, remote_id in pairs
            ],
        )

    async def remote_ids(self, integration: str, lead_ids: Iterable[int]) -> dict[int, str]:
        ids = list(lead_ids)
        if not ids:
            return {}
        rows = await self.session.execute(
            select(IntegrationLink.lead_id, IntegrationLink.remote_id).where(
                IntegrationLink.integration == integration, IntegrationLink.lead_id.in_(ids)
            )
        )
        return {int(lead_id): str(remote_id) for lead_id, remote_id in rows.all()}

    async def lead_for_remote(self, integration: str, remote_id: str) -> int | None:
        return await self.session.scalar(
            select(IntegrationLink.lead_id).where(
                IntegrationLink.integration == integration, IntegrationLink.remote_id == remote_id
            )
        )

    async def links_of_lead(self, lead_id: int) -> dict[str, str]:
        """The lead's remote ids by integration, the linked ones only (the API's lead detail)."""
        rows = await self.session.execute(LINKS_OF_LEAD, {"lead_id": lead_id})
        linked = {str(name): str(remote_id) for name, remote_id in rows.all()}
        return {name: linked[name] for name in CRM_INTEGRATIONS if name in linked}

    # ---- state --------------------------------------------------------------------------------------------

    async def take_turn(self, integration: str, sender_id: str, *, now: datetime, until: datetime) -> bool:
        """Become (or stay) the one sender of the integration until ``until``; False while another
        sender's turn lasts. One conditional UPDATE decides between instances."""
        await self._ensure_state(integration)
        result = await self.session.execute(
            update(IntegrationState)
            .where(
                IntegrationState.integration == integration,
                or_(
                    IntegrationState.sender_id.is_(None),
                    IntegrationState.sender_id == sender_id,
                    IntegrationState.sender_until.is_(None),
                    IntegrationState.sender_until <= now,
                ),
            )
            .values(sender_id=sender_id, sender_until=until)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1

    async def turn_taken(self, integration: str, sender_id: str, now: datetime) -> bool:
        """Is another sender's turn running? A read, so one who waits does not take the write lock to ask."""
        row = (
            await self.session.execute(
                select(IntegrationState.sender_id, IntegrationState.sender_until).where(
                    IntegrationState.integration == integration
                )
            )
        ).first()
        if row is None or row.sender_id is None or row.sender_id == sender_id:
            return False
        return row.sender_until is not None and row.sender_until > now

    async def end_turn(self, integration: str, sender_id: str) -> None:
        await self.session.execute(
            update(IntegrationState)
            .where(IntegrationState.integration == integration, IntegrationState.sender_id == sender_id)
            .values(sender_id=None, sender_until=None)
            .execution_options(synchronize_session=False)
        )

    async def _ensure_state(self, integration: str) -> None:
        await self.session.execute(
            insert_or_skip(self.session, _STATE, [IntegrationState.integration]), {"integration": integration}
        )

    async def _state(self, integration: str) -> IntegrationState:
        await self._ensure_state(integration)
        state = await self.session.get(IntegrationState, integration, populate_existing=True)
        assert state is not None
        return state

    async def note_success(self, integration: str, now: datetime) -> None:
        state = await self._state(integration)
        state.last_success_at = now

    async def note_error(self, integration: str, error: str, now: datetime) -> None:
        state = await self._state(integration)
        state.last_error = error[:ERROR_LIMIT]
        state.last_error_at = now

    async def secrets(self, integration: str) -> dict[str, Any] | None:
        state = await self.session.get(IntegrationState, integration, populate_existing=True)
        return dict(state.secrets) if state is not None and state.secrets else None

    async def save_secrets(self, integration: str, secrets: dict[str, Any]) -> None:
        state = await self._state(integration)
        state.secrets = dict(secrets)
