"""The notification outbox: rows written in the caller's transaction, sent later by the delivery worker.

A row's ``kind`` and ``payload`` say what to tell: the facts of a notification or reminder (written by
``db.notifications`` and ``db.reminders``; the presentation layer words them when the row is sent), or a
message already worded by its writer::

    {"text": "<b>HTML</b>", "reply_markup": {...InlineKeyboardMarkup as JSON...} | None}

Either may carry ``"edit_of": "<idempotency key of a sent row>"``: edit that message instead of sending.

``chat_id`` / ``thread_id`` are columns, not payload. Life of a row: ``pending`` → ``sending`` (claimed,
``next_attempt_at`` = end of the lease) → ``sent`` | back to ``pending`` (retry later) | ``failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import permissions
from db.enums import OutboxStatus
from db.errors import Forbidden
from db.models import OutboxMessage, User, utcnow
from db.permissions import Actor
from db.sql import insert_or_skip

ERROR_LIMIT = 1000

_OUTBOX_TABLE = cast(Table, OutboxMessage.__table__)


@dataclass(slots=True, frozen=True)
class OutboxRow:
    """One message for ``enqueue_many`` (the arguments of ``enqueue``)."""

    key: str
    chat_id: int
    kind: str
    payload: dict[str, Any]
    user_id: int | None = None
    thread_id: int | None = None


@dataclass(slots=True)
class OutboxOverview:
    counts: dict[OutboxStatus, int]
    failed: list[tuple[OutboxMessage, User | None]]


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # Something was queued in this transaction (the unit of work wakes the delivery worker on commit).
        self.queued = False

    async def enqueue(
        self,
        *,
        key: str,
        chat_id: int,
        kind: str,
        payload: dict[str, Any],
        user_id: int | None = None,
        thread_id: int | None = None,
    ) -> OutboxMessage | None:
        """Queue one message; ``key`` makes it idempotent (a second enqueue with it is a no-op, returns None).

        Decided by the unique index in one statement, so two instances queueing the same reminder at
        the same moment get one row between them and neither fails.
        """
        now = utcnow()
        values = {
            "idempotency_key": key,
            "chat_id": chat_id,
            "thread_id": thread_id,
            "user_id": user_id,
            "kind": kind,
            "payload": payload,
            "status": OutboxStatus.PENDING,
            "created_at": now,
            "next_attempt_at": now,
            "attempts": 0,
        }
        stmt = insert_or_skip(self.session, _OUTBOX_TABLE, [OutboxMessage.idempotency_key]).returning(OutboxMessage.id)
        row_id = await self.session.scalar(stmt, values)
        self.queued = self.queued or row_id is not None
        return None if row_id is None else await self.session.get(OutboxMessage, row_id)

    async def enqueue_many(self, rows: Sequence[OutboxRow]) -> None:
        """Queue messages in one statement, each idempotent by its key like ``enqueue`` (whether a row
        was new is not reported). Rows are written at once, not at the next flush: pending ORM changes
        are flushed first (autoflush), so the order of writes stays the order of calls."""
        now = utcnow()
        values = [
            {
                "idempotency_key": row.key,
                "chat_id": row.chat_id,
                "thread_id": row.thread_id,
                "user_id": row.user_id,
                "kind": row.kind,
                "payload": row.payload,
                "status": OutboxStatus.PENDING,
                "created_at": now,
                "next_attempt_at": now,
                "attempts": 0,
            }
            for row in rows
        ]
        if values:
            # A key already queued makes its row insert nothing (the unique index on the key).
            stmt = insert_or_skip(self.session, _OUTBOX_TABLE, [OutboxMessage.idempotency_key])
            await self.session.execute(stmt, values)
            self.queued = True

    # ---- the delivery worker ---------------------------------------------------------------------------

    async def due(self, now: datetime, *, limit: int) -> list[OutboxMessage]:
        """Pending rows whose time has come, oldest first (served by ix_outbox_pending)."""
        rows = await self.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
        )
        return list(rows.all())

    async def next_due_at(self) -> datetime | None:
        """When the earliest pending row becomes due (or a sending row's lease ends)."""
        return await self.session.scalar(
            select(func.min(OutboxMessage.next_attempt_at)).where(
                OutboxMessage.status.in_([OutboxStatus.PENDING, OutboxStatus.SENDING])
            )
        )

    async def by_key(self, key: str) -> OutboxMessage | None:
        return await self.session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))

    async def due_heads(self, now: datetime, *, limit: int) -> list[OutboxMessage]:
        """The oldest due pending row of each chat, oldest first: one busy chat cannot starve the others."""
        heads = (
            select(func.min(OutboxMessage.id))
            .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
            .group_by(OutboxMessage.chat_id)
        )
        rows = await self.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.id.in_(heads))
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
        )
        return list(rows.all())

    async def claim(self, row_id: int, *, lease_until: datetime) -> OutboxMessage | None:
        """pending → sending, only if still pending: the one worker that wins the UPDATE sends it.

        Returns the row as it is now (its payload may have been rewritten since it was listed).
        """
        result = await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.status == OutboxStatus.PENDING)
            .values(status=OutboxStatus.SENDING, next_attempt_at=lease_until)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return None
        return await self.session.get(OutboxMessage, row_id, populate_existing=True)

    async def unclaim(self, row_id: int, *, at: datetime) -> None:
        """sending → pending for a row claimed and then not sent (the worker stopped first)."""
        await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.status == OutboxStatus.SENDING)
            .values(status=OutboxStatus.PENDING, next_attempt_at=at)
            .execution_options(synchronize_session=False)
        )

    async def mark_sent(self, row_id: int, *, message_id: int | None, now: datetime) -> None:
        await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.status == OutboxStatus.SENDING)
            .values(
                status=OutboxStatus.SENT,
                sent_at=now,
                telegram_message_id=message_id,
                attempts=OutboxMessage.attempts + 1,
                last_error=None,
            )
            .execution_options(synchronize_session=False)
        )

    async def mark_retry(self, row_id: int, *, error: str, at: datetime, count_attempt: bool = True) -> None:
        """Back to pending, due at ``at``; a 429 does not count as an attempt (it is Telegram's pacing)."""
        values: dict[str, Any] = {
            "status": OutboxStatus.PENDING,
            "next_attempt_at": at,
            "last_error": error[:ERROR_LIMIT],
        }
        if count_attempt:
            values["attempts"] = OutboxMessage.attempts + 1
        await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.status == OutboxStatus.SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def mark_failed(self, row_id: int, *, error: str, count_attempt: bool = True) -> None:
        values: dict[str, Any] = {"status": OutboxStatus.FAILED, "last_error": error[:ERROR_LIMIT]}
        if count_attempt:
            values["attempts"] = OutboxMessage.attempts + 1
        await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id, OutboxMessage.status == OutboxStatus.SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def expired_leases(self, now: datetime) -> list[OutboxMessage]:
        """Rows a worker claimed and never settled (it crashed or was killed between send and mark)."""
        rows = await self.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.next_attempt_at <= now)
            .order_by(OutboxMessage.id)
        )
        return list(rows.all())

    async def counts(self) -> dict[OutboxStatus, int]:
        rows = await self.session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
        found = {OutboxStatus(status): int(count) for status, count in rows.all()}
        return {status: found.get(status, 0) for status in OutboxStatus}

    # ---- /outbox (admins) ------------------------------------------------------------------------------

    async def overview(self, actor: Actor, *, failed_limit: int = 10) -> OutboxOverview:
        if not permissions.can_manage_outbox(actor):
            raise Forbidden("outbox")
        rows = await self.session.execute(
            select(OutboxMessage, User)
            .outerjoin(User, User.id == OutboxMessage.user_id)
            .where(OutboxMessage.status == OutboxStatus.FAILED)
            .order_by(OutboxMessage.id.desc())
            .limit(failed_limit)
        )
        return OutboxOverview(counts=await self.counts(), failed=[(pair[0], pair[1]) for pair in rows.all()])

    async def retry_failed(self, actor: Actor) -> int:
        """Re-queue every failed row (attempts start again; the last error stays until it is sent)."""
        if not permissions.can_manage_outbox(actor):
            raise Forbidden("outbox")
        result = await self.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == OutboxStatus.FAILED)
            .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
