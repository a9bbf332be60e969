"""Team members and one-time invites."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import permissions
from db.enums import Role
from db.errors import Forbidden, InvalidInput, NotFound
from db.models import Invite, User, utcnow
from db.permissions import Actor
from db.rows import UserRow
from db.settings import AccessSection


@dataclass(slots=True, frozen=True)
class TelegramProfile:
    telegram_id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language: str | None = None


# Every update looks its sender up: read as a plain row, not an ORM object (``db.rows.UserRow``).
USER_COLUMNS = tuple(User.__table__.columns)
# What a deep link's start parameter may carry (Telegram: up to 64 of A-Z, a-z, 0-9, _ and -); the codes
# made here (``secrets.token_urlsafe``) are of that alphabet.
_INVITE_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_BY_TELEGRAM_ID = select(*USER_COLUMNS).where(User.telegram_id == bindparam("telegram_id"))


class UserRepository:
    def __init__(self, session: AsyncSession, access: AccessSection) -> None:
        self.session = session
        self.access = access

    async def by_telegram_id(self, telegram_id: int) -> User | None:
        return await self.session.scalar(select(User).where(User.telegram_id == telegram_id))

    async def by_id(self, user_id: int) -> User | None:
        return await self.session.get(User, user_id)

    async def get(self, actor: Actor, user_id: int) -> User:
        user = await self.session.get(User, user_id)
        if user is None:
            raise NotFound("user", user_id)
        return user

    async def ensure_config_admin(self, profile: TelegramProfile) -> User | None:
        """Admins named in the config are recognised on /start and always stay active admins."""
        if profile.telegram_id not in self.access.admins:
            return None
        user = await self.by_telegram_id(profile.telegram_id)
        if user is None:
            user = User(telegram_id=profile.telegram_id, role=Role.ADMIN, is_active=True)
            self._apply_profile(user, profile)
            self.session.add(user)
            await self.session.flush()
        else:
            user.role = Role.ADMIN
            user.is_active = True
        return user

    @staticmethod
    def _apply_profile(user: User, profile: TelegramProfile) -> None:
        user.first_name = (profile.first_name or "")[:128]
        user.last_name = profile.last_name[:128] if profile.last_name else None
        user.username = profile.username
        if user.language is None and profile.language:
            user.language = "en" if profile.language.lower().startswith("en") else "ru"

    async def sender(self, telegram_id: int) -> UserRow | None:
        """Who sent an update, as a row: read on every update, so no ORM object (``db.rows.UserRow``)."""
        row = (await self.session.execute(_BY_TELEGRAM_ID, {"telegram_id": telegram_id})).first()
        return None if row is None else UserRow(*row)

    @staticmethod
    def profile_changes(user: UserRow, profile: TelegramProfile) -> dict[str, Any]:
        """What ``touch_profile`` would change: names that moved on, an unreachable mark to clear."""
        changes: dict[str, Any] = {}
        first_name = profile.first_name[:128]
        if (user.first_name, user.last_name, user.username) != (first_name, profile.last_name, profile.username):
            changes.update(first_name=first_name, last_name=profile.last_name, username=profile.username)
        if user.unreachable_since is not None:
            changes["unreachable_since"] = None
        return changes

    async def touch_profile(self, user: UserRow, profile: TelegramProfile) -> UserRow:
        """Keep names current and clear the unreachable mark: the user is evidently talking to us again.

        Returns the row as it now is (the same one when nothing changed, as is usual).
        """
        changes = self.profile_changes(user, profile)
        if not changes:
            return user
        await self.session.execute(update(User).where(User.id == user.id).values(**changes))
        return replace(user, **changes)

    async def team(self, actor: Actor, *, include_inactive: bool = True) -> list[User]:
        if actor.role not in permissions.MANAGERS:
            raise Forbidden("view_team")
        stmt = select(User)
        if not include_inactive:
            stmt = stmt.where(User.is_active.is_(True))
        rows = await self.session.scalars(stmt.order_by(User.is_active.desc(), User.role, User.first_name, User.id))
        return list(rows.all())

    async def member(self, actor: Actor, user_id: int) -> User:
        """One member's card: for whoever may see the team list."""
        if actor.role not in permissions.MANAGERS:
            raise Forbidden("view_team")
        return await self.get(actor, user_id)

    async def active_sellers(self) -> list[User]:
        rows = await self.session.scalars(
            select(User)
            .where(User.is_active.is_(True), User.role.in_([r.value for r in permissions.ASSIGNABLE_ROLES]))
            .order_by(User.first_name, User.id)
        )
        return list(rows.all())

    async def active_with_roles(self, roles: set[Role]) -> list[User]:
        rows = await self.session.scalars(
            select(User).where(User.is_active.is_(True), User.role.in_([r.value for r in roles])).order_by(User.id)
        )
        return list(rows.all())

    async def set_role(self, actor: Actor, user_id: int, role: Role) -> User:
        target = await self.get(actor, user_id)
        if not permissions.can_change_role(actor, target, role):
            raise Forbidden("change_role")
        if target.telegram_id in self.access.admins and role != Role.ADMIN:
            # /start would make them admin again anyway: the config is where that is changed.
            raise Forbidden("change_role", "an admin named in the config stays an admin")
        target.role = role
        return target

    async def set_active(self, actor: Actor, user_id: int, active: bool) -> User:
        target = await self.get(actor, user_id)
        if not permissions.can_change_role(actor, target, Role(target.role)):
            raise Forbidden("deactivate")
        if target.telegram_id in self.access.admins and not active:
            raise Forbidden("deactivate", "an admin named in the config cannot be deactivated")
        target.is_active = active
        return target

    async def set_paused(self, actor: Actor, user_id: int, paused: bool) -> User:
        """Put a salesperson on leave (automatic assignment skips them; their leads stay theirs), or back."""
        target = await self.get(actor, user_id)
        if not permissions.can_pause(actor, target):
            raise Forbidden("pause", "only an active salesperson can be paused, by an admin or the head of sales")
        target.paused = paused
        return target

    async def set_language(self, actor: Actor, language: str) -> None:
        if language not in ("ru", "en"):
            raise InvalidInput("language", "language_unknown", "language must be ru or en")
        # The acting user is often a row (db.rows.UserRow), not an object the session would write.
        await self.session.execute(update(User).where(User.id == actor.id).values(language=language))

    async def mark_unreachable(self, chat_id: int) -> None:
        await self.session.execute(
            update(User)
            .where(User.telegram_id == chat_id, User.unreachable_since.is_(None))
            .values(unreachable_since=utcnow())
        )


class InviteRepository:
    def __init__(self, session: AsyncSession, access: AccessSection) -> None:
        self.session = session
        self.access = access

    async def create(self, actor: Actor, role: Role) -> Invite:
        if not permissions.can_invite(actor, role):
            raise Forbidden("invite")
        now = utcnow()
        invite = Invite(
            code=secrets.token_urlsafe(16),
            role=role,
            created_by_id=actor.id,
            created_at=now,
            expires_at=now + self.access.invite_ttl,
        )
        self.session.add(invite)
        await self.session.flush()
        return invite

    async def accept(self, code: str, profile: TelegramProfile) -> User:
        """Spend a one-time code: a new member, or a deactivated one coming back with the invite's role."""
        now = utcnow()
        if _INVITE_CODE.fullmatch(code) is None:  # no link carries it: not looked up (a NUL fails on PostgreSQL)
            raise InvalidInput("code", "invite_invalid", "the invite link is invalid, used or expired")
        invite = (await self.session.execute(select(Invite).where(Invite.code == code))).scalar_one_or_none()
        if invite is None or invite.used_at is not None or invite.expires_at <= now:
            raise InvalidInput("code", "invite_invalid", "the invite link is invalid, used or expired")
        existing = (
            await self.session.execute(select(User).where(User.telegram_id == profile.telegram_id))
        ).scalar_one_or_none()
        if existing is not None and existing.is_active:
            raise InvalidInput("code", "already_member", "you are already on the team")
        # A conditional UPDATE spends the code once even if two people press the link together.
        spent = await self.session.execute(
            update(Invite)
            .where(Invite.id == invite.id, Invite.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(spent, "rowcount", 0) != 1:
            raise InvalidInput("code", "invite_invalid", "the invite link is invalid, used or expired")
        if existing is None:
            user = User(telegram_id=profile.telegram_id, role=invite.role, is_active=True)
            UserRepository._apply_profile(user, profile)
            self.session.add(user)
        else:
            user = existing
            user.role = invite.role
            user.is_active = True
        await self.session.flush()
        await self.session.execute(update(Invite).where(Invite.id == invite.id).values(used_by_id=user.id))
        return user
