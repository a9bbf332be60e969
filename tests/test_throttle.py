"""The in-memory limit on failed authentications, on a clock the test moves."""

from __future__ import annotations

import pytest

from api.throttle import MemoryFailureLimiter, client_key
from tests.edge_support import ManualClock


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
