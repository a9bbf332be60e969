"""A limit on failed authentications per client: guessing tokens or webhook secrets is slowed to a crawl.

A client that failed ``limit`` times within ``window`` is refused (429 with ``Retry-After``) until the
oldest of those failures is older than the window, whether or not its next credentials are right:
checking them would let the guessing go on. Only presented and wrong credentials count; a request with
none is a plain 401 and costs nothing.

``FailureLimiter`` is the seam: ``MemoryFailureLimiter`` keeps the counts in this process (enough for
one process); ``RedisFailureLimiter`` keeps them in Redis, shared by every instance, and is what
``create_app`` uses when ``[redis] url`` is set. While Redis cannot be reached it counts in memory
instead (a warning says so once), so an outage neither turns every authenticated request into a 500
nor lifts the limit.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bot.config import ApiSection

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)


class FailureLimiter(Protocol):
    async def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again (at least 1), or None when it may try now."""
        ...

    async def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        ...


class MemoryFailureLimiter:
    """The failures of the last ``window`` seconds per client, in memory, for at most ``max_clients``
    clients (the longest quiet are forgotten first, so a flood of addresses cannot exhaust memory)."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_clients < 1:
            raise ValueError("limit, window and max_clients must be positive")
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    @classmethod
    def from_settings(cls, api: ApiSection) -> MemoryFailureLimiter:
        return cls(api.auth_failures, api.auth_failure_window.total_seconds())

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    async def retry_after(self, client: str) -> int | None:
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.limit:
            return None
        # Free again once the failure that reached the limit leaves the window.
        until = failures[-self.limit] + self.window
        return max(1, math.ceil(until - now))

    async def failed(self, client: str) -> None:
        now = self._clock()
        failures = self._recent(client, now)
        if failures is None:
            failures = self._failures[client] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        failures.append(now)
        self._failures.move_to_end(client)

    def __len__(self) -> int:
        return len(self._failures)


class RedisFailureLimiter:
    """The same rule as ``MemoryFailureLimiter``, with the failures in Redis: one sorted set per client
    (scores are failure times, trimmed to the window, expiring with it), shared by every instance."""

    def __init__(self, redis: Redis, limit: int, window: float, *, prefix: str = "leadbot:auth-failures") -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.redis = redis
        self.limit = limit
        self.window = window
        self.prefix = prefix
        # Where failures are counted while Redis is down; ``_down`` so the outage is logged once.
        self.fallback = MemoryFailureLimiter(limit, window)
        self._down = False

    def _outage(self, error: Exception) -> None:
        if not self._down:
            log.warning("failed logins counted in memory: Redis is unreachable (%s)", error.__class__.__name__)
        self._down = True

    def _back(self) -> None:
        if self._down:
            log.warning("failed logins counted in Redis again")
        self._down = False

    @classmethod
    def from_settings(cls, api: ApiSection, url: str) -> RedisFailureLimiter:
        from redis.asyncio import Redis

        # Short socket timeouts: a Redis that does not answer must not hold every request (see _outage).
        redis = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        return cls(redis, api.auth_failures, api.auth_failure_window.total_seconds())

    def _key(self, client: str) -> str:
        return f"{self.prefix}:{client}"

    async def retry_after(self, client: str) -> int | None:
        from redis.exceptions import RedisError

        try:
            retry = await self._retry_after(client)
        except RedisError as error:
            self._outage(error)
            return await self.fallback.retry_after(client)
        self._back()
        # Failures counted during an outage still count once Redis is back.
        return retry if retry is not None else await self.fallback.retry_after(client)

    async def failed(self, client: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._failed(client)
        except RedisError as error:
            self._outage(error)
            await self.fallback.failed(client)
            return
        self._back()

    async def _retry_after(self, client: str) -> int | None:
        # Redis's own clock, so every instance measures the window alike.
        seconds, micros = await self.redis.time()
        now = seconds + micros / 1_000_000
        key = self._key(client)
        await self.redis.zremrangebyscore(key, 0, now - self.window)
        recent = await self.redis.zrange(key, -self.limit, -1, withscores=True)
        if len(recent) < self.limit:
            return None
        until = float(recent[0][1]) + self.window
        return max(1, math.ceil(until - now))

    async def _failed(self, client: str) -> None:
        seconds, micros = await self.redis.time()
        now = seconds + micros / 1_000_000
        key = self._key(client)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {f"{now}:{secrets.token_hex(4)}": now})
            pipe.zremrangebyscore(key, 0, now - self.window)
            pipe.expire(key, math.ceil(self.window) + 1)
            await pipe.execute()

    async def close(self) -> None:
        await self.redis.aclose()


def client_key(host: str | None) -> str:
    """Whom failures are counted against: the client's address, an IPv6 one by its /64 network (one
    machine usually holds a whole /64, and could otherwise take a fresh address for every guess)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
