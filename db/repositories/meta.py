"""Meta lead-ads deliveries (``db.models.MetaLeadgen``): recorded once per leadgen id, claimed, finished.

Claiming follows the outbox's pattern: a claimed row is ``fetching`` with ``next_attempt_at`` the end of
its lease, so a fetcher that died mid-way leaves rows another one picks up after the lease. On PostgreSQL
the due rows are taken ``FOR UPDATE SKIP LOCKED``, so two instances never claim the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, ScalarSelect, Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from db.models import MetaLeadgen, utcnow
from db.rows import MetaOriginRow
from db.sql import insert_or_skip

PENDING, FETCHING, DONE, FAILED = "pending", "fetching", "done", "failed"
ERROR_LIMIT = 1000
_TABLE = cast(Table, MetaLeadgen.__table__)

# A lead's Meta origin: the first delivery that names it (a client who comes back through another form
# adds a row with the same lead, the first stays the origin). A seek on ``ix_meta_leadgen_lead``.
_EARLIER = aliased(MetaLeadgen, name="meta_first")
ORIGIN_COLUMNS = (
    MetaLeadgen.leadgen_id,
    MetaLeadgen.form_id,
    MetaLeadgen.ad_id,
    MetaLeadgen.page_id,
    MetaLeadgen.platform,
)


def origin_id(lead_id: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ScalarSelect[Any]:
    """The id of the lead's origin row: correlated to the enclosing statement's ``lead_id``."""
    return select(func.min(_EARLIER.id)).where(_EARLIER.lead_id == lead_id).scalar_subquery()


def origin_row(values: Sequence[Any]) -> MetaOriginRow | None:
    """From ``ORIGIN_COLUMNS`` (perhaps of an outer join): None when there is no delivery."""
    leadgen_id, form_id, ad_id, page_id, platform = values
    if leadgen_id is None:
        return None
    return MetaOriginRow(leadgen_id, form_id, ad_id, page_id, platform)


_ORIGIN = select(*ORIGIN_COLUMNS).where(MetaLeadgen.id == origin_id(bindparam("lead_id")))


@dataclass(slots=True, frozen=True)
class Delivery:
    """One ``leadgen`` change of a webhook delivery."""

    leadgen_id: str
    page_id: str | None = None
    form_id: str | None = None
    ad_id: str | None = None


@dataclass(slots=True, frozen=True)
class Claimed:
    id: int
    leadgen_id: str
    page_id: str | None
    form_id: str | None
    ad_id: str | None
    attempts: int


class MetaLeadRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, deliveries: Sequence[Delivery]) -> None:
        """Remember each leadgen id once: a repeat (Meta retries for up to 36 hours) inserts nothing."""
        now = utcnow()
        values = [
            {
                "leadgen_id": d.leadgen_id,
                "page_id": d.page_id,
                "form_id": d.form_id,
                "ad_id": d.ad_id,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for d in deliveries
        ]
        if values:
            await self.session.execute(insert_or_skip(self.session, _TABLE, [MetaLeadgen.leadgen_id]), values)

    async def claim(self, now: datetime, *, lease: timedelta, limit: int = 20) -> list[Claimed]:
        """Due rows (pending, or fetching past their lease), marked fetching until ``now + lease``."""
        due = (
            select(MetaLeadgen)
            .where(MetaLeadgen.status.in_([PENDING, FETCHING]), MetaLeadgen.next_attempt_at <= now)
            .order_by(MetaLeadgen.next_attempt_at, MetaLeadgen.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = list((await self.session.scalars(due)).all())
        for row in rows:
            row.status = FETCHING
            row.next_attempt_at = now + lease
        return [Claimed(r.id, r.leadgen_id, r.page_id, r.form_id, r.ad_id, r.attempts) for r in rows]

    async def done(self, row_id: int, lead_id: int | None, *, platform: str | None = None) -> None:
        values: dict[str, object] = {"status": DONE, "lead_id": lead_id, "done_at": utcnow(), "last_error": None}
        if platform is not None:
            values["platform"] = platform[:16]
        await self.session.execute(update(MetaLeadgen).where(MetaLeadgen.id == row_id).values(**values))

    async def failed(self, row_id: int, error: str, *, retry_at: datetime | None) -> None:
        """One more failed attempt: again at ``retry_at``, or for good when it is None."""
        await self.session.execute(
            update(MetaLeadgen)
            .where(MetaLeadgen.id == row_id)
            .values(
                status=PENDING if retry_at is not None else FAILED,
                attempts=MetaLeadgen.attempts + 1,
                next_attempt_at=retry_at or utcnow(),
                last_error=error[:ERROR_LIMIT],
            )
        )

    async def next_due_at(self) -> datetime | None:
        return await self.session.scalar(
            select(func.min(MetaLeadgen.next_attempt_at)).where(
                or_(MetaLeadgen.status == PENDING, MetaLeadgen.status == FETCHING)
            )
        )

    async def origin(self, lead_id: int) -> MetaOriginRow | None:
        """The Meta lead-ads delivery ``lead_id`` came from, if any (the card reads it in its own statement)."""
        row = (await self.session.execute(_ORIGIN, {"lead_id": lead_id})).first()
        return origin_row(row) if row is not None else None

    async def by_leadgen_id(self, leadgen_id: str) -> MetaLeadgen | None:
        return await self.session.scalar(select(MetaLeadgen).where(MetaLeadgen.leadgen_id == leadgen_id))
