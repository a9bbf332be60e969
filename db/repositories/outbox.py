"""The notification outbox: rows written in the caller's transaction, sent later by the delivery worker."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import OutboxMessage, utcnow


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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
        """Queue one message; ``key`` makes it idempotent (a second enqueue with it is a no-op, returns None)."""
        existing = await self.session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key))
        if existing is not None:
            return None
        now = utcnow()
        row = OutboxMessage(
            idempotency_key=key,
            chat_id=chat_id,
            thread_id=thread_id,
            user_id=user_id,
            kind=kind,
            payload=payload,
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
        self.session.add(row)
        return row
