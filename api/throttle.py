"""A limit on failed authentications per client: guessing tokens or webhook secrets is slowed to a crawl.

A client that failed ``limit`` times within ``window`` is refused (429 with ``Retry-After``) until the
oldest of those failures is older than the window, whether or not its next credentials are right:
checking them would let the guessing go on. Only presented and wrong credentials count; a request with
none is a plain 401 and costs nothing.

``FailureLimiter`` is the seam: ``MemoryFailureLimiter`` keeps the counts in this process (enough for
one process; each process of several counts alone). A shared store implements the same two methods,
e.g. with Redis: ``ZADD key now now`` + ``ZREMRANGEBYSCORE key 0 now-window`` + ``EXPIRE key window``
per failure, ``ZRANGE key 0 0 WITHSCORES`` and ``ZCARD`` to decide. Pass it as
``create_app(..., limiter=...)``.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from bot.config import ApiSection


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
