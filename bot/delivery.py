"""The delivery worker: sends the outbox to Telegram within Telegram's limits, and loses nothing.

Outbox rows (``db.models.OutboxMessage``) are written by whoever has something to say, in the
transaction of the change that causes it (``uow.outbox.enqueue(key=..., chat_id=..., kind=...,
payload=..., user_id=..., thread_id=...)``). The worker is the only thing that talks to Telegram for
them. A row's ``kind`` and ``payload`` say what happened (facts, see ``db.notifications`` and
``db.reminders``); right before a row is sent, the worker has ``bot.presentation.presenter.Presenter`` render it
into text and keyboard, in a read unit of its own that is closed before the request goes out. A
payload carrying ``"text"`` (``bot.presentation.presenter.message_payload``) is sent as it is. A payload with
``"edit_of": "<idempotency key of another row>"`` is an ``editMessageText`` of the message that other
row sent (it waits until that one is sent); any other a ``sendMessage`` to the row's ``chat_id`` (and
forum topic ``thread_id``). A row whose subject was deleted before it was sent renders to nothing and
is marked ``failed`` with ``bot.presentation.presenter.GONE``.

Pacing (``[notifications]``): one send every ``1 / rate_per_second`` seconds at most — fixed spacing, so
there is never a burst above the rate; one message per ``per_chat_interval`` to a chat, counted from the
moment Telegram answered the previous one (so network jitter cannot squeeze two into one second at
Telegram's end); at most ``group_per_minute`` per minute to a group (negative chat id). A 429 pauses all
sending for the ``retry_after`` Telegram gives; the row is retried after it without spending an attempt.

Failures: 5xx, timeouts, dropped connections and undecodable answers are retried with exponential
backoff (``attempts``, ``next_attempt_at``, ``last_error``) up to ``max_attempts``, then the row is
``failed``. A 403 fails the row at once and marks the user unreachable (``/users`` shows it); a 400 or any
other refusal fails it at once. Nothing is dropped: a row ends ``sent`` or ``failed`` with its error.

Several instances (``leadbot run`` processes on one PostgreSQL): Telegram's limits are the bot token's,
not a process's, so only one worker sends at a time. Each refresh of the candidate rows takes or renews
the **delivery turn** (``TELEGRAM_TURN`` in ``integration_state``, one conditional ``UPDATE``, the same
mechanism the CRM integrations use) for ``turn`` (15 s); a worker without the turn sends nothing and
asks again at its next poll. A stopped worker hands the turn back at once; a killed one's turn lapses, and
another instance takes over within ``turn`` plus a poll. Together the instances therefore stay within
the configured rate, per chat and per group, as one process does.

Crash safety (at most once): a row is claimed (``pending`` → ``sending`` with a lease) in its own
transaction just before its slot, sent, and marked ``sent`` (with Telegram's message id) by the
worker's next transaction, a fraction of a second later. The loop is the worker's only database
writer. A stopped worker puts back the row it had claimed for the next slot and finishes and records
the requests on their way, so a restart resumes exactly the unsent rows and never re-sends a sent one.
Only a hard kill leaves rows whose fate is unknown — the one or two claimed, on their way or sent and
not yet recorded at that instant: when their lease ends they are marked ``failed`` ("interrupted"), not
re-sent, so a duplicate is never produced; an admin sees them in ``/outbox`` and can re-queue them.
Edits are idempotent and are simply retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import Message

from bot.config import NotificationsSection
from bot.presentation.presenter import GONE, Presenter, Rendered
from db.enums import OutboxStatus
from db.models import OutboxMessage
from db.uow import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)
T = TypeVar("T")

INTERRUPTED = (
    "interrupted between sending and confirmation (worker stopped or crashed); not re-sent to avoid a "
    "duplicate — retry from /outbox if it did not arrive"
)
# The row of ``integration_state`` whose sender owns Telegram delivery (one sender per bot token).
TELEGRAM_TURN = "telegram"
RETRYABLE = (TelegramServerError, TelegramNetworkError, ClientDecodeError, TimeoutError, OSError)


# ---- time ------------------------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """Time that only moves when someone sleeps: tests and simulations run without real waiting.

    ``now()`` starts at the real time (rows are queued with real timestamps) and moves with the sleeps.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime.now(UTC)
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.elapsed += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


# ---- pacing ------------------------------------------------------------------------------------------------


class RateLimiter:
    """Telegram's limits as the worker keeps them: global spacing, per-chat spacing, per-group window."""

    def __init__(
        self,
        *,
        rate_per_second: float,
        per_chat_interval: float,
        group_per_minute: int,
        clock: Clock,
    ) -> None:
        self.interval = 1.0 / rate_per_second
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self.clock = clock
        self._next_slot = -math.inf
        self._paused_until = -math.inf
        self._chat_free_at: dict[int, float] = {}
        self._in_flight: set[int] = set()
        self._group_sends: dict[int, deque[float]] = {}

    def global_delay(self) -> float:
        """Seconds until the next send may start (spacing and any 429 pause)."""
        return max(0.0, max(self._next_slot, self._paused_until) - self.clock.monotonic())

    def chat_delay(self, chat_id: int) -> float | None:
        """Seconds until ``chat_id`` may get a message; None while one is on its way to it."""
        if chat_id in self._in_flight:
            return None
        now = self.clock.monotonic()
        delay = self._chat_free_at.get(chat_id, -math.inf) - now
        window = self._group_sends.get(chat_id)
        if window is not None:
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self.group_per_minute:
                delay = max(delay, window[0] + 60.0 - now)
        return max(0.0, delay)

    def acquire(self, chat_id: int) -> None:
        """A send to ``chat_id`` starts now: the next one may start one interval later, not sooner.

        Strict spacing from the actual start: a late wake-up delays what follows rather than being
        caught up with a quicker send, so no second ever holds more than ``rate_per_second`` starts
        (the price, a few percent of throughput lost to sleep overshoot, is in the README's figures).
        """
        now = self.clock.monotonic()
        self._next_slot = max(self._next_slot, now) + self.interval
        self._in_flight.add(chat_id)

    def release(self, chat_id: int, *, delivered: bool) -> None:
        """Telegram answered: the chat's interval (and a group's minute) counts from now."""
        now = self.clock.monotonic()
        self._in_flight.discard(chat_id)
        self._chat_free_at[chat_id] = now + self.per_chat_interval
        if chat_id < 0 and delivered:
            self._group_sends.setdefault(chat_id, deque()).append(now)

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self.clock.monotonic() + seconds)


# ---- the worker --------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class _Job:
    row_id: int
    chat_id: int
    thread_id: int | None
    user_id: int | None
    kind: str
    payload: dict[str, Any]
    attempts: int
    edit_message_id: int | None


@dataclass(slots=True)
class _Outcome:
    result: Literal["sent", "retry", "failed"]
    message_id: int | None = None
    error: str = ""
    retry_in: float = 0.0
    count_attempt: bool = True
    unreachable: bool = False


class DeliveryWorker:
    """Sends due outbox rows; ``start()``/``stop()`` beside polling, or ``run(until_idle=True)`` in tests."""

    def __init__(
        self,
        bot: Bot,
        uow_factory: UnitOfWorkFactory,
        config: NotificationsSection,
        *,
        clock: Clock | None = None,
        lease: timedelta = timedelta(seconds=90),
        request_timeout: int = 30,
        backoff_base: float = 2.0,
        backoff_max: float = 600.0,
        batch_size: int = 200,
        max_in_flight: int = 32,
        on_send: Callable[[int, int], None] | None = None,
        presenter: Presenter | None = None,
        turn: timedelta = timedelta(seconds=15),
    ) -> None:
        self.bot = bot
        self.uow_factory = uow_factory
        # Turns each row's facts into its message just before the send (default: from the factory's settings).
        self.presenter = presenter if presenter is not None else Presenter(uow_factory.settings)
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.lease = lease
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        # Called with (row id, chat id) as each request starts: tests and the benchmark watch with it.
        self.on_send = on_send
        self.limiter = RateLimiter(
            rate_per_second=config.rate_per_second,
            per_chat_interval=config.per_chat_interval.total_seconds(),
            group_per_minute=config.group_per_minute,
            clock=self.clock,
        )
        self._poll = config.poll_interval.total_seconds()
        # The one sender for the bot token across instances (see the module's docstring).
        self.turn = turn
        self.sender_id = uuid.uuid4().hex
        self.has_turn = False
        self._turn_checked_at = -math.inf
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._candidates: list[OutboxMessage] = []
        self._fetched_at = -math.inf
        self._next_due: datetime | None = None
        # A row claimed for the next global slot, not yet sent.
        self._ready: _Job | None = None
        # Finished sends whose outcome the loop has yet to record (it writes them with its next claim).
        self._outcomes: list[tuple[_Job, _Outcome]] = []

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._runner is None or self._runner.done():
            self._stopping.clear()
            self._runner = asyncio.create_task(self.run(), name="outbox-delivery")
        return self._runner

    def stop_soon(self) -> None:
        """Ask the loop to stop taking rows (it still finishes and records the requests on their way)."""
        self._stopping.set()
        self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a grace period, not an I/O timeout
        """Stop taking rows, let the requests on their way finish (and be marked), then return."""
        self.stop_soon()
        if self._runner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._runner), timeout)
            except TimeoutError:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._runner
            self._runner = None

    def wake(self) -> None:
        """New rows were queued: look at the outbox now rather than at the next poll."""
        self._wake.set()

    async def abort(self) -> None:
        """Stop dead, as a killed process would: requests on their way are cut off and never recorded."""
        for task in [*self._tasks.values(), *([self._runner] if self._runner else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *([self._runner] if self._runner else []), return_exceptions=True)
        self._tasks.clear()
        self._runner = None
        self._ready = None

    async def run(self, *, until_idle: bool = False, max_virtual_seconds: float = 3600.0) -> None:
        """The loop. ``until_idle`` returns once nothing is pending or on its way (tests, the benchmark)."""
        started = self.clock.monotonic()
        while not self._stopping.is_set():
            try:
                if await self._step():
                    continue
                if self._outcomes:
                    await self._write()
                if until_idle and await self._idle():
                    break
            except Exception:  # the database was unavailable, say: keep going, nothing is lost
                log.exception("outbox delivery step failed; retrying")
                await self._pause(self._poll)
                continue
            if until_idle and self.clock.monotonic() - started > max_virtual_seconds:
                raise RuntimeError("the outbox did not drain")
            await self._pause(self._next_wait(until_idle=until_idle))
        await self._release_ready()
        await self._drain()
        await self._end_turn()

    # ---- one step -----------------------------------------------------------------------------------------

    async def _step(self) -> bool:
        """Start one send if one may start now; False when there is nothing to do at this moment.

        The next row is claimed while the previous send's interval runs out, so the database round trip
        does not stretch the spacing: the send starts the moment its slot opens.
        """
        if len(self._tasks) >= self.max_in_flight:
            return False
        if self._ready is None:
            if (
                not self._candidates
                or self.clock.monotonic() - self._fetched_at >= self._poll
                # Renew the turn well before it lapses, so no other instance starts sending beside this one.
                or self.clock.monotonic() - self._turn_checked_at >= self.turn.total_seconds() / 3
            ):
                await self._refresh()
            for index, row in enumerate(self._candidates):
                if self.limiter.chat_delay(row.chat_id) != 0.0:
                    continue
                del self._candidates[index]
                self._ready = await self._claim(row.id)
                break
            else:
                return False
            if self._ready is None:  # lost the row (or it must wait): look again
                return True
        delay = self.limiter.global_delay()
        if delay > 0:
            await self._pause(delay)
            return True
        job, self._ready = self._ready, None
        self.limiter.acquire(job.chat_id)
        if self.on_send is not None:
            self.on_send(job.row_id, job.chat_id)
        self._tasks[job.row_id] = asyncio.create_task(self._deliver(job), name=f"outbox-{job.row_id}")
        return True

    def _next_wait(self, *, until_idle: bool = False) -> float:
        """How long to sleep when nothing may start: until a listed chat frees up or a row falls due.

        Running for good, new rows may come at any time: at most one poll. Draining (``until_idle``)
        with nothing listed and nothing on its way, it may sleep straight to the next due row.
        """
        wait = self._poll
        if self._next_due is not None:
            # A row already due is waiting for its chat (listed) or for a lease to run out: not this.
            until_due = (self._next_due - self.clock.now()).total_seconds()
            draining = until_idle and not self._candidates and not self._tasks
            if until_due > 0:
                wait = until_due if draining else min(wait, until_due)
        for row in self._candidates:
            delay = self.limiter.chat_delay(row.chat_id)
            if delay is not None:
                wait = min(wait, delay)
        return max(wait, 0.001)

    async def _write(self, work: Callable[[UnitOfWork], Awaitable[T]] | None = None) -> T | None:
        """One transaction of the loop: the outcomes of finished sends, then ``work``.

        The loop is the worker's only database writer — send tasks hand their outcomes over instead of
        committing them — so the worker never waits on its own locks and the spacing holds.
        """
        outcomes = list(self._outcomes)
        now = self.clock.now()
        async with self.uow_factory() as uow:
            for job, outcome in outcomes:
                await self._apply(uow, job, outcome, now)
            result = await work(uow) if work is not None else None
            await uow.commit()
        del self._outcomes[: len(outcomes)]  # tasks only append: what came in meanwhile stays
        for job, outcome in outcomes:
            if outcome.result == "failed":
                log.warning("outbox row %s (%s) failed: %s", job.row_id, job.kind, outcome.error)
        return result

    async def _refresh(self) -> None:
        now = self.clock.now()

        async def fetch(uow: UnitOfWork) -> list[OutboxMessage]:
            self.has_turn = await uow.integrations.take_turn(
                TELEGRAM_TURN, self.sender_id, now=now, until=now + self.turn
            )
            if not self.has_turn:  # another instance sends: wait for it to stop or lapse
                self._next_due = None
                return []
            await self._recover(uow, now)
            self._next_due = await uow.outbox.next_due_at()
            return await uow.outbox.due_heads(now, limit=self.batch_size)

        checked = self.clock.monotonic()
        if not self.has_turn and not self._outcomes:
            # Waiting for another instance's turn: ask with a read, not a write transaction.
            async with self.uow_factory(read_only=True) as uow:
                taken = await uow.integrations.turn_taken(TELEGRAM_TURN, self.sender_id, now)
            if taken:
                self._candidates, self._next_due = [], None
                self._fetched_at = self._turn_checked_at = checked
                return
        rows = await self._write(fetch) or []
        self._turn_checked_at = checked
        self._candidates = [row for row in rows if row.id not in self._tasks]
        self._fetched_at = self.clock.monotonic()

    def _busy(self, row_id: int) -> bool:
        """Is the row this worker's own (on its way, claimed for the next slot, or awaiting its record)?"""
        return (
            row_id in self._tasks
            or (self._ready is not None and self._ready.row_id == row_id)
            or any(job.row_id == row_id for job, _ in self._outcomes)
        )

    async def _recover(self, uow: UnitOfWork, now: datetime) -> None:
        """Rows another (dead) worker claimed and never settled: edits go again, sends fail honestly."""
        for row in await uow.outbox.expired_leases(now):
            if self._busy(row.id):
                continue
            if row.payload.get("edit_of"):
                row.status = OutboxStatus.PENDING
                row.next_attempt_at = now
            else:
                row.status = OutboxStatus.FAILED
                row.last_error = INTERRUPTED
                log.warning("outbox row %s was interrupted mid-send; marked failed", row.id)

    async def _claim(self, row_id: int) -> _Job | None:
        now = self.clock.now()

        async def claim(uow: UnitOfWork) -> _Job | None:
            row = await uow.outbox.claim(row_id, lease_until=now + self.lease)
            if row is None:
                return None
            edit_message_id = None
            edit_of = row.payload.get("edit_of")
            if edit_of:
                original = await uow.outbox.by_key(str(edit_of))
                if original is None or original.status == OutboxStatus.FAILED:
                    await uow.outbox.mark_failed(row.id, error="the message to edit was never delivered")
                    return None
                if original.status != OutboxStatus.SENT or original.telegram_message_id is None:
                    await uow.outbox.mark_retry(
                        row.id,
                        error="waiting for the message to edit",
                        at=now + timedelta(seconds=self._poll),
                        count_attempt=False,
                    )
                    return None
                edit_message_id = original.telegram_message_id
            return _Job(
                row_id=row.id,
                chat_id=row.chat_id,
                thread_id=row.thread_id,
                user_id=row.user_id,
                kind=row.kind,
                payload=dict(row.payload),
                attempts=row.attempts,
                edit_message_id=edit_message_id,
            )

        return await self._write(claim)

    # ---- one message -------------------------------------------------------------------------------------

    async def _deliver(self, job: _Job) -> None:
        delivered = False
        try:
            try:
                outcome = await self._render_and_send(job)
                delivered = outcome.result == "sent"
                if outcome.result == "retry" and not outcome.count_attempt:
                    self.limiter.pause(outcome.retry_in)
            finally:
                self.limiter.release(job.chat_id, delivered=delivered)
            self._outcomes.append((job, outcome))
        finally:
            self._tasks.pop(job.row_id, None)
            self._wake.set()

    async def _render(self, job: _Job) -> Rendered | None:
        """The row's message: a short read unit, left before anything goes on the network."""
        plain = self.presenter.plain(job.payload)
        if plain is not None:
            return plain
        async with self.uow_factory(read_only=True) as uow:
            return await self.presenter.render(uow, job.kind, job.payload, user_id=job.user_id)

    async def _render_and_send(self, job: _Job) -> _Outcome:
        try:
            message = await self._render(job)
        except Exception as exc:  # the database was unavailable, or a bug: keep the row, back off
            log.exception("could not render outbox row %s (%s)", job.row_id, job.kind)
            return self._retry_or_fail(job, exc)
        if message is None:
            return _Outcome("failed", error=GONE)
        return await self._send(job, message)

    async def _send(self, job: _Job, message: Rendered) -> _Outcome:
        text, reply_markup = message.text, message.reply_markup
        try:
            if job.edit_message_id is not None:
                result: Message | bool = await self.bot.edit_message_text(
                    text=text,
                    chat_id=job.chat_id,
                    message_id=job.edit_message_id,
                    reply_markup=reply_markup,
                    request_timeout=self.request_timeout,
                )
            else:
                result = await self.bot.send_message(
                    chat_id=job.chat_id,
                    text=text,
                    message_thread_id=job.thread_id,
                    reply_markup=reply_markup,
                    request_timeout=self.request_timeout,
                )
        except TelegramRetryAfter as exc:
            return _Outcome("retry", error=_describe(exc), retry_in=float(exc.retry_after), count_attempt=False)
        except TelegramForbiddenError as exc:
            return _Outcome("failed", error=_describe(exc), unreachable=True)
        except TelegramBadRequest as exc:
            if job.edit_message_id is not None and "message is not modified" in str(exc):
                return _Outcome("sent", message_id=job.edit_message_id)
            return _Outcome("failed", error=_describe(exc))
        except RETRYABLE as exc:
            return self._retry_or_fail(job, exc)
        except TelegramAPIError as exc:  # 401, 404, 409, a migrated group: retrying will not help
            return _Outcome("failed", error=_describe(exc))
        except Exception as exc:  # a bug or something unforeseen: keep the row, back off, give up eventually
            log.exception("unexpected error sending outbox row %s", job.row_id)
            return self._retry_or_fail(job, exc)
        message_id = result.message_id if isinstance(result, Message) else job.edit_message_id
        return _Outcome("sent", message_id=message_id)

    def _retry_or_fail(self, job: _Job, exc: BaseException) -> _Outcome:
        if job.attempts + 1 >= self.config.max_attempts:
            return _Outcome("failed", error=_describe(exc))
        delay = min(self.backoff_max, self.backoff_base * 2**job.attempts)
        return _Outcome("retry", error=_describe(exc), retry_in=delay)

    @staticmethod
    async def _apply(uow: UnitOfWork, job: _Job, outcome: _Outcome, now: datetime) -> None:
        if outcome.result == "sent":
            await uow.outbox.mark_sent(job.row_id, message_id=outcome.message_id, now=now)
        elif outcome.result == "retry":
            await uow.outbox.mark_retry(
                job.row_id,
                error=outcome.error,
                at=now + timedelta(seconds=outcome.retry_in),
                count_attempt=outcome.count_attempt,
            )
        else:
            await uow.outbox.mark_failed(job.row_id, error=outcome.error)
            if outcome.unreachable:
                await uow.users.mark_unreachable(job.chat_id)

    # ---- waiting -------------------------------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` on the clock, or less when stopped or woken (a send finished, rows queued).

        A wake that came while the loop was busy (rows queued during a refresh) is not lost: the pause
        then returns at once, and the loop looks again."""
        if self._wake.is_set():
            self._wake.clear()
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
            self._wake.clear()

    async def _idle(self) -> bool:
        if self._tasks or self._ready is not None or self._outcomes:
            return False
        async with self.uow_factory(read_only=True) as uow:
            counts = await uow.outbox.counts()
        return counts[OutboxStatus.PENDING] == 0 and counts[OutboxStatus.SENDING] == 0

    async def _release_ready(self) -> None:
        """Stopping with a row claimed but not sent: it goes back to pending, untouched."""
        job, self._ready = self._ready, None
        if job is not None:
            async with self.uow_factory() as uow:
                await uow.outbox.unclaim(job.row_id, at=self.clock.now())
                await uow.commit()

    async def _end_turn(self) -> None:
        """Hand the turn back, so another instance takes over now rather than when it lapses."""
        if not self.has_turn:
            return
        self.has_turn = False
        try:
            async with self.uow_factory() as uow:
                await uow.integrations.end_turn(TELEGRAM_TURN, self.sender_id)
                await uow.commit()
        except Exception:  # the database is gone: the turn lapses on its own
            log.warning("could not hand back the delivery turn; it lapses in %s", self.turn)

    async def _drain(self) -> None:
        """Let the requests already on their way finish and be recorded."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        for attempt in range(5):
            if not self._outcomes:
                return
            try:
                await self._write()
            except Exception:
                log.exception("could not record sent notifications (try %s)", attempt + 1)
                await asyncio.sleep(0.1 * (attempt + 1))


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"
