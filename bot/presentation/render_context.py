"""What every renderer needs from the configuration, and the reads they share."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from bot.presentation.views import user_label
from bot.texts import Texts, pick_language, texts_for
from db.models import Lead, User
from db.permissions import Actor
from db.uow import UnitOfWork


class RenderContext:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.default_language: str = settings.bot.default_language
        self.currency: str = settings.crm.currency
        self.tz: ZoneInfo = settings.crm.tz

    def texts(self, language: str | None) -> Texts:
        """The recipient's language (``None``: the configured default, e.g. the team chat)."""
        return texts_for(pick_language(language, None, self.default_language))

    @staticmethod
    def actor_label(texts: Texts, actor: Actor | None) -> str:
        return user_label(actor) if actor is not None else texts.t("notify.system")

    @staticmethod
    async def lead(uow: UnitOfWork, lead_id: Any) -> Lead | None:
        """The lead as it is now; None when it was deleted."""
        lead = await uow.session.get(Lead, int(lead_id))
        return lead if lead is not None and lead.deleted_at is None else None

    @staticmethod
    async def user(uow: UnitOfWork, user_id: Any) -> User | None:
        return await uow.session.get(User, int(user_id)) if user_id is not None else None
