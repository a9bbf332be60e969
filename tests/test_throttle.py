"""The in-memory limit on failed authentications, on a clock the test moves; and what stands in for
Redis's counts while Redis is down."""

from __future__ import annotations

import httpx
import pytest

from api.app import close_app, create_app
from api.throttle import MemoryFailureLimiter, RedisFailureLimiter, client_key
from bot.config import Settings
from db.engine import Database
from tests.api_support import bearer
from tests.edge_support import ManualClock, with_api


async def test_a_client_is_blocked_at_the_limit_until_its_oldest_failure_leaves_the_window() -> None:
    clock = ManualClock(100.0)
    limiter = MemoryFailureLimiter(3, 60, clock=clock)

    for step in (0, 10, 10):
        clock.now += step
        assert await limiter.retry_after("a") is None
        await limiter.failed("a")

    assert await limiter.retry_after("a") == 40  # failures at 100, 110, 120; now 120
    assert await limiter.retry_after("b") is None
    clock.now = 159.5
    assert await limiter.retry_after("a") == 1  # never 0: a Retry-After of 0 invites a hammering loop
    clock.now = 160
    assert await limiter.retry_after("a") is None
    await limiter.failed("a")  # 110, 120, 160: blocked again until 170
    assert await limiter.retry_after("a") == 10


async def test_quiet_clients_are_forgotten() -> None:
    clock = ManualClock()
    limiter = MemoryFailureLimiter(2, 60, clock=clock)
    await limiter.failed("a")
    clock.now += 61
    assert await limiter.retry_after("a") is None
    assert len(limiter) == 0


async def test_memory_is_bounded_by_the_number_of_clients() -> None:
    limiter = MemoryFailureLimiter(1, 60, max_clients=100, clock=ManualClock())
    for n in range(1000):
        await limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    assert await limiter.retry_after("10.0.3.231") == 60  # the latest are kept
    assert await limiter.retry_after("10.0.0.0") is None  # the longest quiet were dropped


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("testclient", "testclient"),
    ],
)
def test_client_keys(host: str | None, key: str) -> None:
    assert client_key(host) == key


async def test_a_redis_outage_falls_back_to_counting_in_memory(
    settings: Settings, database: Database, tokens: dict[str, str], free_tcp_port: int
) -> None:
    # Nothing listens there: every Redis call fails. The API must neither answer 500 to every
    # authenticated request nor stop limiting guesses.
    down = f"redis://127.0.0.1:{free_tcp_port}/0"
    configured = with_api(settings, auth_failures=2)
    configured = configured.model_copy(update={"redis": configured.redis.model_copy(update={"url": down})})
    app = create_app(configured, database)
    assert isinstance(app.state.failure_limiter, RedisFailureLimiter)
    try:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://leadbot.test") as client:
            right = await client.get("/api/leads/", headers=bearer(tokens["admin"]))
            guesses = [(await client.get("/api/leads/", headers=bearer("lb_guess"))).status_code for _ in range(3)]
    finally:
        await close_app(app)

    assert right.status_code == 200, right.text
    assert guesses == [401, 401, 429]
