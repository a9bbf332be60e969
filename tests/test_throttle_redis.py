"""The limit on failed authentications kept in Redis: shared by every instance of the API (issue 14).

Runs against the Redis of LEADBOT_TEST_REDIS_URL (CI sets it); without one it is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.throttle import RedisFailureLimiter
from bot.config import Settings
from db.engine import Database
from tests.conftest import SERVER_REDIS_URL

pytestmark = pytest.mark.skipif(not SERVER_REDIS_URL, reason="needs a Redis server: set LEADBOT_TEST_REDIS_URL")


@pytest.fixture
async def two_instances() -> AsyncIterator[tuple[RedisFailureLimiter, RedisFailureLimiter]]:
    prefix = f"leadbot-test-failures-{os.getpid()}"
    first = RedisFailureLimiter(Redis.from_url(SERVER_REDIS_URL), 3, 1.0, prefix=prefix)
    second = RedisFailureLimiter(Redis.from_url(SERVER_REDIS_URL), 3, 1.0, prefix=prefix)
    yield first, second
    keys = [key async for key in first.redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await first.redis.delete(*keys)
    await first.close()
    await second.close()


async def test_failures_on_two_instances_add_up(two_instances: tuple[RedisFailureLimiter, RedisFailureLimiter]) -> None:
    first, second = two_instances
    await first.failed("203.0.113.7")
    await second.failed("203.0.113.7")
    assert await first.retry_after("203.0.113.7") is None
    await first.failed("203.0.113.7")
    # The third failure, on either instance, blocks the client on both; another client is free.
    assert await second.retry_after("203.0.113.7") == 1
    assert await first.retry_after("203.0.113.7") == 1
    assert await second.retry_after("198.51.100.1") is None
    await asyncio.sleep(1.1)  # the window (1 s) passes: the failures are forgotten
    assert await first.retry_after("203.0.113.7") is None


async def test_the_api_counts_in_redis_when_redis_is_configured(settings: Settings, database: Database) -> None:
    configured = settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": SERVER_REDIS_URL})})
    app = create_app(configured, database)
    limiter = app.state.failure_limiter
    assert isinstance(limiter, RedisFailureLimiter)
    await limiter.close()
