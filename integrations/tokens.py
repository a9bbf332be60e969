"""The TokenStore that keeps an integration's rotating OAuth tokens in the database (``integration_state``),
so a restart, or a second instance, goes on with the refresh token amoCRM issued last."""

from __future__ import annotations

from typing import Any

from db.uow import UnitOfWorkFactory


class DatabaseTokenStore:
    def __init__(self, factory: UnitOfWorkFactory, integration: str) -> None:
        self.factory = factory
        self.integration = integration

    async def load(self) -> dict[str, Any] | None:
        async with self.factory(read_only=True) as uow:
            return await uow.integrations.secrets(self.integration)

    async def save(self, tokens: dict[str, Any]) -> None:
        # Its own short unit, committed at once: the old refresh token is dead the moment amo answered.
        async with self.factory() as uow:
            await uow.integrations.save_secrets(self.integration, tokens)
            await uow.commit()
