"""API access: personal bearer tokens, the integration user webhooks act as, and idempotency keys.

Tokens are shown once and stored only as a SHA-256 hash: a copy of the database does not hand out
working tokens. A token works only while it is not revoked AND its user is active, checked on every
request, so deactivating someone cuts their API access at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.enums import Role
from db.errors import Forbidden, IdempotencyKeyReused
from db.models import ApiToken, IdempotencyKey, User, utcnow
from db.permissions import Actor

TOKEN_PREFIX = "lb_"
# Webhook-created leads need a creator: this user. Telegram user ids are positive, so a negative one
# can never log in to the bot; the user is also inactive, so it cannot hold a token either.
INTEGRATION_TELEGRAM_ID = -1
INTEGRATION_NAME = "Интеграция"
# Writing ``last_used_at`` on every request would turn every read into a write.
_TOUCH_EVERY = timedelta(minutes=5)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class ApiTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def issue(self, actor: Actor) -> str:
        """A new personal token for ``actor``; the raw value is returned once and never stored."""
        if not actor.is_active or actor.telegram_id <= 0:
            raise Forbidden("token", "only an active team member may hold an API token")
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.session.add(ApiToken(user_id=actor.id, token_hash=hash_token(raw), created_at=utcnow()))
        await self.session.flush()
        return raw

    async def revoke_all(self, actor: Actor) -> int:
        """Revoke every live token of ``actor``; returns how many were live."""
        result = await self.session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == actor.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def authenticate(self, raw: str) -> TokenHolder | None:
        """The active user a live token belongs to, or None. Only reads: see ``touch``."""
        if not raw or len(raw) > 256:
            return None
        row = (
            await self.session.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == hash_token(raw), ApiToken.revoked_at.is_(None))
            )
        ).first()
        if row is None:
            return None
        token, user = row
        if not user.is_active:
            return None
        last = token.last_used_at
        return TokenHolder(user, token.id, touch_due=last is None or utcnow() - last > _TOUCH_EVERY)

    async def touch(self, token_id: int) -> None:
        """Note that a token was used (at most every few minutes: ``TokenHolder.touch_due``)."""
        await self.session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id)
            .values(last_used_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    async def integration_user(self) -> User:
        """The inactive admin that webhook intake acts as (created on first use)."""
        user = await self.session.scalar(select(User).where(User.telegram_id == INTEGRATION_TELEGRAM_ID))
        if user is None:
            user = User(
                telegram_id=INTEGRATION_TELEGRAM_ID,
                first_name=INTEGRATION_NAME,
                role=Role.ADMIN,
                is_active=False,
                created_at=utcnow(),
            )
            self.session.add(user)
            await self.session.flush()
        return user


@dataclass(frozen=True, slots=True)
class TokenHolder:
    user: User
    token_id: int
    touch_due: bool  # the token's last use was noted long enough ago to note this one


class IdempotencyRepository:
    """Remembers the first answer given for a (scope, key) so a retried request repeats it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def recall(self, scope: str, key: str, request_hash: str | None = None) -> dict[str, Any] | None:
        """The first answer for the key, or None; ``IdempotencyKeyReused`` when it was first used for
        another request (``request_hash`` differs from the one stored with it)."""
        row = await self.session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        )
        if row is None:
            return None
        if request_hash is not None and row.request_hash is not None and row.request_hash != request_hash:
            raise IdempotencyKeyReused(key)
        return row.response

    async def remember(
        self,
        scope: str,
        key: str,
        response: dict[str, Any],
        *,
        lead_id: int | None = None,
        request_hash: str | None = None,
    ) -> bool:
        """Store the answer; False when another request stored one for the same key first."""
        self.session.add(
            IdempotencyKey(
                scope=scope, key=key, lead_id=lead_id, response=response, request_hash=request_hash, created_at=utcnow()
            )
        )
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            return False
        return True
