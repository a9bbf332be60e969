"""What every CRM integration shares: the lead as it is sent, one queued change, its outcome, the errors
a remote side answers with, and a rate limiter.

The durable queue (``db.integrations``) hands an adapter a batch of ``SyncJob`` s, each with the lead as
it is *now* (``LeadSnapshot``), read after the job was queued: a change is sent as the lead's current
state, so a retry or a late delivery never sends stale values. The adapter answers one ``Outcome`` per
job (or raises ``RetryLater`` for the whole batch), and never touches the database itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from db.enums import LeadStatus


class JobKind(StrEnum):
    CREATE = "create"  # the lead is new here: create it there (or, on a retry or a first sync, link it by phone)
    UPDATE = "update"  # status, assignee, name, budget... changed: send the lead's current state
    COMMENT = "comment"  # a comment was added: a note on the remote lead
    PULL = "pull"  # the remote side says its lead changed: read it and bring its status here
    STAGE = "stage"  # Meta's Conversions API: the lead reached a stage (status) at ``payload["at"]``


@dataclass(frozen=True, slots=True)
class LeadSnapshot:
    lead_id: int
    client_name: str
    phone_number: str  # E.164
    status: LeadStatus
    source: str
    budget: float | None
    notes: str | None
    assignee_telegram_id: int | None
    created_at: datetime
    updated_at: datetime
    leadgen_id: str | None = None  # the Meta lead-ads id, for leads from a Meta form


@dataclass(frozen=True, slots=True)
class SyncJob:
    id: int
    lead_id: int
    kind: JobKind
    payload: dict[str, Any]
    attempts: int  # sends tried before this one: > 0 means an earlier try may have reached the remote side
    remote_id: str | None  # the remote lead linked to ours, if any yet
    lead: LeadSnapshot | None  # None when the lead is gone (deleted)
    comment: str | None = None  # the comment's text, for COMMENT
    first_sync: bool = False  # queued by ``leadbot sync``: link by phone before creating


@dataclass(frozen=True, slots=True)
class Outcome:
    job_id: int
    ok: bool
    remote_id: str | None = None  # CREATE: the remote lead now linked to ours
    error: str | None = None
    permanent: bool = False  # a refusal that a retry cannot cure (a 400): the job fails at once
    retry_after: float | None = None
    remote_status: LeadStatus | None = None  # PULL: the status the remote lead has now

    @classmethod
    def done(cls, job_id: int, *, remote_id: str | None = None, remote_status: LeadStatus | None = None) -> Outcome:
        return cls(job_id, True, remote_id=remote_id, remote_status=remote_status)

    @classmethod
    def failed(cls, job_id: int, error: str, *, permanent: bool = False, retry_after: float | None = None) -> Outcome:
        return cls(job_id, False, error=error[:500], permanent=permanent, retry_after=retry_after)


class RemoteError(Exception):
    """The remote side refused or could not be reached; ``str()`` is safe to show an admin (no secrets)."""


class RetryLater(RemoteError):
    """Worth trying again: a rate limit (429, Bitrix24's QUERY_LIMIT_EXCEEDED), a 5xx, a timeout."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Rejected(RemoteError):
    """The remote side refused this request for good (a 400 about its content)."""


class AuthFailed(RemoteError):
    """The credentials are wrong or revoked: every job waits (retried later) until an admin fixes them."""


class Adapter(Protocol):
    """One remote CRM as the queue's worker sees it."""

    name: str  # "amocrm", "bitrix24", "meta"
    batch_size: int  # the most jobs one ``deliver`` takes

    async def deliver(self, jobs: Sequence[SyncJob]) -> list[Outcome]: ...

    async def aclose(self) -> None: ...


class TokenStore(Protocol):
    """Where an OAuth integration keeps its rotating tokens (the database in production)."""

    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, tokens: dict[str, Any]) -> None: ...


@dataclass
class MemoryTokenStore:
    tokens: dict[str, Any] | None = None
    saves: int = 0

    async def load(self) -> dict[str, Any] | None:
        return dict(self.tokens) if self.tokens is not None else None

    async def save(self, tokens: dict[str, Any]) -> None:
        self.tokens = dict(tokens)
        self.saves += 1


@dataclass
class RateLimiter:
    """At most ``rate`` requests per second, evenly spaced; after idling, ``burst`` may go at once.

    Spacing rather than a per-second window keeps a sender under limits counted over any window, which
    is how amoCRM (7/s) and Bitrix24's leaky bucket (2/s) count. The spacing runs from when each request
    was actually let go, not from when it was booked: a sleep that wakes late (a busy event loop) never
    lets the next request follow it closer than ``1/rate``.
    """

    rate: float
    burst: int = 1
    _sent: deque[float] = field(default_factory=deque, init=False)
    _not_before: float = field(default=0.0, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def acquire(self) -> None:
        interval = 1.0 / self.rate
        async with self._lock:  # one at a time: each waits for the previous one's actual time
            while True:
                now = time.monotonic()
                earliest = self._not_before
                if self._sent:
                    earliest = max(earliest, self._sent[-1] + interval * (1 if self.burst == 1 else 0))
                if len(self._sent) >= self.burst:
                    earliest = max(earliest, self._sent[0] + self.burst * interval)
                if earliest <= now:
                    break
                await asyncio.sleep(earliest - now)
            self._sent.append(time.monotonic())
            while len(self._sent) > self.burst:
                self._sent.popleft()

    def pause(self, seconds: float) -> None:
        """The remote side said "too many": nobody sends for ``seconds``."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)
