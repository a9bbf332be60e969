"""The idempotency repository binds a key to the hash of the request it was first used for."""

from __future__ import annotations

import pytest

from db.errors import IdempotencyKeyReused
from db.uow import UnitOfWorkFactory


async def test_the_repository_refuses_a_reused_key(uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        assert await uow.idempotency.remember("webhook:x", "k", {"status": 201, "body": {}}, request_hash="a" * 64)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.idempotency.recall("webhook:x", "k", "a" * 64) == {"status": 201, "body": {}}
        with pytest.raises(IdempotencyKeyReused):
            await uow.idempotency.recall("webhook:x", "k", "b" * 64)
        # A key stored before hashes were kept (null) replays as it always did.
        assert await uow.idempotency.remember("webhook:x", "old", {"status": 201, "body": {}})
        assert await uow.idempotency.recall("webhook:x", "old", "c" * 64) == {"status": 201, "body": {}}
