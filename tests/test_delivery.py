"""The delivery worker under fault injection, stops and crashes, on a virtual clock (no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import EditMessageText, SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from sqlalchemy import select

from bot.config import Settings
from bot.delivery import INTERRUPTED, DeliveryWorker, VirtualClock
from bot.factory import create_bot, create_uow_factory
from bot.presentation.presenter import edit_payload, message_payload
from db.engine import Database
from db.enums import OutboxStatus
from db.models import OutboxMessage, User
from db.uow import UnitOfWorkFactory
from keyboards.callbacks import OutboxAction, OutboxCB
from tests.conftest import Harness, Team
from tests.fake_bot_api import FakeBotAPI
from tests.fakes import RecordingSession, make_bot

GROUP = -100200300


class CountingSession(RecordingSession):
    """Also records which sendMessage calls Telegram accepted, and when (on the test's clock)."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.accepted: list[SendMessage] = []
        self.times: list[tuple[float, int]] = []
        self.block_text: str | None = None
        self.blocked = asyncio.Event()

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        if isinstance(method, SendMessage):
            self.times.append((self.clock.monotonic(), int(method.chat_id)))
            if self.block_text is not None and method.text == self.block_text:
                self.blocked.set()
                await asyncio.Event().wait()  # never answers: the process dies with the request in flight
        result = await super().make_request(bot, method, timeout)
        if isinstance(method, SendMessage):
            self.accepted.append(method)
        return result

    def accepted_per_text(self) -> Counter[str]:
        return Counter(m.text for m in self.accepted)


@pytest.fixture
def factory(settings: Settings, database: Database) -> UnitOfWorkFactory:
    return create_uow_factory(settings, database)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def session(clock: VirtualClock) -> CountingSession:
    return CountingSession(clock)


def worker_for(
    session: CountingSession, factory: UnitOfWorkFactory, clock: VirtualClock, settings: Settings, **config: Any
) -> DeliveryWorker:
    notifications = settings.notifications.model_copy(update=config)
    return DeliveryWorker(make_bot(session), factory, notifications, clock=clock)


async def enqueue(
    factory: UnitOfWorkFactory, messages: list[tuple[int, str]], users: dict[int, int] | None = None
) -> list[int]:
    ids = []
    async with factory() as uow:
        for chat_id, text in messages:
            row = await uow.outbox.enqueue(
                key=f"t:{text}",
                chat_id=chat_id,
                kind="test",
                payload=message_payload(text),
                user_id=(users or {}).get(chat_id),
            )
            assert row is not None
            await uow.session.flush()
            ids.append(row.id)
        await uow.commit()
    return ids


async def rows(factory: UnitOfWorkFactory) -> list[OutboxMessage]:
    async with factory() as uow:
        return list((await uow.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


def retry_after(seconds: int) -> TelegramRetryAfter:
    return TelegramRetryAfter(method=SendMessage(chat_id=1, text="x"), message="Too Many Requests", retry_after=seconds)


def forbidden() -> TelegramForbiddenError:
    return TelegramForbiddenError(
        method=SendMessage(chat_id=1, text="x"), message="Forbidden: bot was blocked by the user"
    )


def server_error() -> TelegramServerError:
    return TelegramServerError(method=SendMessage(chat_id=1, text="x"), message="Internal Server Error")


def network(message: str) -> TelegramNetworkError:
    return TelegramNetworkError(method=SendMessage(chat_id=1, text="x"), message=message)


def bad_request() -> TelegramBadRequest:
    return TelegramBadRequest(method=SendMessage(chat_id=1, text="x"), message="Bad Request: can't parse entities")


async def assert_sent_once_or_failed(factory: UnitOfWorkFactory, session: CountingSession) -> list[OutboxMessage]:
    """The invariant of the outbox: each row sent exactly once, or failed with its error and never sent."""
    accepted = session.accepted_per_text()
    result = await rows(factory)
    for row in result:
        text = row.payload["text"]
        if row.status == OutboxStatus.SENT:
            assert accepted[text] == 1, (text, accepted[text])
            assert row.sent_at is not None and row.telegram_message_id is not None
        else:
            assert row.status == OutboxStatus.FAILED, (text, row.status)
            assert row.last_error
            assert accepted[text] == 0, text
    return result


# ---- the plain path ----------------------------------------------------------------------------------------


async def test_every_row_is_sent_once_with_its_markup_and_topic(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(1000 + i % 5, f"msg {i}") for i in range(12)])
    async with factory() as uow:
        from aiogram.utils.keyboard import InlineKeyboardBuilder

        builder = InlineKeyboardBuilder()
        builder.button(text="Open", callback_data="ld:o:1")
        await uow.outbox.enqueue(
            key="topic",
            chat_id=GROUP,
            thread_id=9,
            kind="test",
            payload=message_payload("<b>topic</b>", builder.as_markup()),
        )
        await uow.commit()

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    result = await assert_sent_once_or_failed(factory, session)
    assert {row.status for row in result} == {OutboxStatus.SENT}
    topic = next(m for m in session.accepted if m.text == "<b>topic</b>")
    assert (topic.chat_id, topic.message_thread_id) == (GROUP, 9)
    assert topic.reply_markup is not None
    assert topic.reply_markup.inline_keyboard[0][0].callback_data == "ld:o:1"  # type: ignore[union-attr]
    # Each row remembers the message Telegram created for it.
    assert len({row.telegram_message_id for row in result}) == len(result)


# ---- faults -----------------------------------------------------------------------------------------------


async def test_429_pauses_everything_for_retry_after_and_spends_no_attempt(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(2000 + i, f"m{i}") for i in range(5)])
    session.fail_next(SendMessage, retry_after(7))

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    result = await assert_sent_once_or_failed(factory, session)
    assert {row.status for row in result} == {OutboxStatus.SENT}
    first = result[0]
    assert first.attempts == 1  # the 429 did not count
    # Nothing went out during the pause: the call after the 429 is at least retry_after later.
    (t_429, _), (t_next, _) = session.times[0], session.times[1]
    assert t_next - t_429 >= 7 - 1e-6


async def test_403_fails_the_row_at_once_and_marks_the_user_unreachable(
    harness: Harness, team: Team, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    factory = harness.uow_factory
    await enqueue(factory, [(team.seller.chat_id, "blocked"), (team.rop.chat_id, "fine")])
    session.fail_next(SendMessage, forbidden())

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    result = await assert_sent_once_or_failed(factory, session)
    blocked = next(row for row in result if row.payload["text"] == "blocked")
    assert blocked.status == OutboxStatus.FAILED
    assert "bot was blocked" in (blocked.last_error or "")
    assert len(session.messages(team.seller.chat_id)) == 1  # no retries
    async with factory() as uow:
        assert (await uow.session.get(User, team.seller.id)).unreachable_since is not None  # type: ignore[union-attr]
        assert (await uow.session.get(User, team.rop.id)).unreachable_since is None  # type: ignore[union-attr]


async def test_400_fails_the_row_at_once(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(3000, "bad")])
    session.fail_next(SendMessage, bad_request())

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    [row] = await assert_sent_once_or_failed(factory, session)
    assert row.status == OutboxStatus.FAILED and row.attempts == 1
    assert "can't parse entities" in (row.last_error or "")
    assert len(session.messages()) == 1


@pytest.mark.parametrize(
    "error",
    [server_error(), network("Request timeout error"), network("ServerDisconnectedError: Server disconnected")],
    ids=["500", "timeout", "dropped"],
)
async def test_transient_errors_are_retried_with_backoff(
    error: Exception, factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(4000, "flaky")])
    session.fail_next(SendMessage, error)
    session.fail_next(SendMessage, error)

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    [row] = await assert_sent_once_or_failed(factory, session)
    assert row.status == OutboxStatus.SENT and row.attempts == 3
    # Backoff: 2 s after the first failure, 4 s after the second.
    times = [t for t, _ in session.times]
    assert times[1] - times[0] >= 2 - 1e-6 and times[2] - times[1] >= 4 - 1e-6


async def test_a_row_that_keeps_failing_ends_failed_after_max_attempts(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(5000, "doomed")])
    for _ in range(5):
        session.fail_next(SendMessage, server_error())

    await worker_for(session, factory, clock, settings, max_attempts=3).run(until_idle=True)

    result = await assert_sent_once_or_failed(factory, session)
    doomed = next(row for row in result if row.payload["text"] == "doomed")
    assert doomed.status == OutboxStatus.FAILED and doomed.attempts == 3
    assert "Internal Server Error" in (doomed.last_error or "")
    assert len(session.messages(5000)) == 3


# ---- stopping and crashing ----------------------------------------------------------------------------------


async def test_a_worker_stopped_mid_batch_and_a_new_one_deliver_everything_once(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    texts = [f"batch {i}" for i in range(40)]
    await enqueue(factory, [(6000 + i % 8, text) for i, text in enumerate(texts)])
    # A storm of faults along the way.
    session.fail_next(SendMessage, retry_after(3))
    session.fail_next(SendMessage, server_error())
    session.fail_next(SendMessage, network("Request timeout error"))
    session.fail_next(SendMessage, bad_request())
    session.fail_next(SendMessage, server_error())

    first = worker_for(session, factory, clock, settings)
    first.on_send = lambda _row, _chat: first.stop_soon() if len(session.times) >= 15 else None
    await first.run()
    stopped_after = len(session.accepted)
    assert 0 < stopped_after < len(texts)
    mid = await rows(factory)
    assert all(row.status != OutboxStatus.SENDING for row in mid)  # a stop leaves nothing half-done

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    result = await assert_sent_once_or_failed(factory, session)
    statuses = Counter(row.status for row in result)
    assert statuses == {OutboxStatus.SENT: 39, OutboxStatus.FAILED: 1}  # only the 400 failed


async def test_a_crash_between_send_and_mark_is_never_resent_but_reported(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(7000 + i, f"c{i}") for i in range(6)])
    session.block_text = "c2"
    crashed = worker_for(session, factory, clock, settings)
    crashed.start()
    await asyncio.wait_for(session.blocked.wait(), 10)
    await crashed.abort()  # killed with c2 on its way to Telegram
    at_crash = {row.payload["text"]: row.status for row in await rows(factory)}
    assert at_crash["c2"] == OutboxStatus.SENDING
    # The worker may already have claimed the row for the next slot (not sent): its fate is as unknown.
    claimed = {text for text, status in at_crash.items() if status == OutboxStatus.SENDING}
    assert claimed <= {"c2", "c3"}

    session.block_text = None
    restarted = worker_for(session, factory, clock, settings)
    clock.advance(restarted.lease.total_seconds() + 1)
    await restarted.run(until_idle=True)

    result = await assert_sent_once_or_failed(factory, session)
    by_text = {row.payload["text"]: row for row in result}
    assert by_text["c2"].status == OutboxStatus.FAILED and by_text["c2"].last_error == INTERRUPTED
    assert [chat for _, chat in session.times].count(7002) == 1  # tried once, never again
    for text in claimed - {"c2"}:  # claimed, never sent, not re-sent: reported like c2
        assert by_text[text].status == OutboxStatus.FAILED and by_text[text].last_error == INTERRUPTED
        assert [chat for _, chat in session.times].count(7000 + int(text[1:])) == 0
    assert all(row.status == OutboxStatus.SENT for text, row in by_text.items() if text not in claimed)


async def test_a_live_lease_is_left_alone(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    [row_id] = await enqueue(factory, [(7100, "elsewhere")])
    async with factory() as uow:
        assert await uow.outbox.claim(row_id, lease_until=clock.now() + timedelta(seconds=60)) is not None
        await uow.commit()
    worker = worker_for(session, factory, clock, settings)
    await worker._refresh()
    [row] = await rows(factory)
    assert row.status == OutboxStatus.SENDING
    assert session.messages() == []


# ---- pacing -----------------------------------------------------------------------------------------------


async def test_global_rate_is_fixed_spacing_without_bursts(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(8000 + i, f"r{i}") for i in range(60)])
    await worker_for(session, factory, clock, settings, rate_per_second=20).run(until_idle=True)

    times = [t for t, _ in session.times]
    assert len(times) == 60
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / 20 - 1e-9
    assert max(Counter(int(t) for t in times).values()) <= 20  # never more than the rate in a second


async def test_one_chat_gets_at_most_one_message_a_second(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(8100 if i % 2 else 8101, f"c{i}") for i in range(10)])
    await worker_for(session, factory, clock, settings).run(until_idle=True)

    per_chat: dict[int, list[float]] = defaultdict(list)
    for t, chat in session.times:
        per_chat[chat].append(t)
    assert sorted(per_chat) == [8100, 8101]
    for stamps in per_chat.values():
        assert len(stamps) == 5
        assert all(b - a >= 1.0 - 1e-6 for a, b in itertools.pairwise(stamps))
    # The two chats were served side by side, not one after the other.
    assert session.times[1][1] != session.times[0][1]


async def test_a_group_gets_at_most_twenty_a_minute(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    await enqueue(factory, [(GROUP, f"g{i}") for i in range(25)])
    await worker_for(session, factory, clock, settings).run(until_idle=True)

    stamps = [t for t, chat in session.times if chat == GROUP]
    assert len(stamps) == 25
    for i, start in enumerate(stamps):
        assert sum(1 for t in stamps[i:] if t < start + 60) <= 20
    assert stamps[20] - stamps[0] >= 60 - 1e-6


# ---- edits ------------------------------------------------------------------------------------------------


async def test_an_edit_waits_for_its_message_and_edits_it(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    async with factory() as uow:
        # The edit is queued first, but must wait for the post it edits.
        await uow.outbox.enqueue(key="edit", chat_id=GROUP, kind="test", payload=edit_payload("post", "edited"))
        await uow.outbox.enqueue(key="post", chat_id=GROUP, kind="test", payload=message_payload("original"))
        await uow.commit()

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    post, edit = sorted(await rows(factory), key=lambda r: r.idempotency_key != "post")
    assert post.status == edit.status == OutboxStatus.SENT
    [edit_call] = session.of(EditMessageText)
    assert (edit_call.chat_id, edit_call.message_id, edit_call.text) == (GROUP, post.telegram_message_id, "edited")


async def test_an_edit_of_a_message_that_never_went_out_fails(
    factory: UnitOfWorkFactory, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    async with factory() as uow:
        await uow.outbox.enqueue(key="post", chat_id=GROUP, kind="test", payload=message_payload("original"))
        await uow.outbox.enqueue(key="edit", chat_id=GROUP, kind="test", payload=edit_payload("post", "edited"))
        await uow.commit()
    session.fail_next(SendMessage, bad_request())

    await worker_for(session, factory, clock, settings).run(until_idle=True)

    statuses = {row.idempotency_key: (row.status, row.last_error) for row in await rows(factory)}
    assert statuses["edit"] == (OutboxStatus.FAILED, "the message to edit was never delivered")
    assert session.of(EditMessageText) == []


# ---- /outbox ----------------------------------------------------------------------------------------------


async def test_outbox_shows_counts_and_failures_and_retries_them(
    harness: Harness, team: Team, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    factory = harness.uow_factory
    await enqueue(
        factory,
        [(team.seller.chat_id, "one"), (team.rop.chat_id, "two"), (9000, "three")],
        users={team.seller.chat_id: team.seller.id, team.rop.chat_id: team.rop.id},
    )
    session.fail_next(SendMessage, bad_request())
    await worker_for(session, factory, clock, settings).run(until_idle=True)

    await harness.send(team.admin, "/outbox")
    text = harness.last_text(team.admin.chat_id)
    assert "Ждут отправки: 0" in text and "Отправлено: 2" in text and "Не доставлено: 1" in text
    assert "can&#x27;t parse entities" in text or "can't parse entities" in text
    assert "Продажник Иванов" in text  # the failed row's recipient

    await harness.press(team.admin, "Повторить")
    assert "Ждут отправки: 1" in harness.last_text(team.admin.chat_id)
    assert "В очередь снова поставлено: 1." in harness.alerts()
    await worker_for(session, factory, clock, settings).run(until_idle=True)
    result = await assert_sent_once_or_failed(factory, session)
    assert {row.status for row in result} == {OutboxStatus.SENT}


async def test_outbox_shows_an_error_with_markup_whole_and_escaped(
    harness: Harness, team: Team, session: CountingSession, clock: VirtualClock, settings: Settings
) -> None:
    factory = harness.uow_factory
    await enqueue(factory, [(team.seller.chat_id, "one")], users={team.seller.chat_id: team.seller.id})
    message = "Bad Request: can't parse entities & <b> at byte 7: " + "x" * 500  # longer than the preview
    session.fail_next(SendMessage, TelegramBadRequest(method=SendMessage(chat_id=1, text="x"), message=message))
    await worker_for(session, factory, clock, settings).run(until_idle=True)
    await harness.send(team.admin, "/outbox")
    # Escaped first, then shortened: an "&" in the error no longer cuts off what follows it.
    assert "&amp; &lt;b&gt; at byte 7: xxx" in harness.last_text(team.admin.chat_id)


@pytest.mark.parametrize("role", ["rop", "mop", "seller", "finance"])
async def test_outbox_is_for_admins_only(harness: Harness, team: Team, role: str) -> None:
    member = getattr(team, role)
    await harness.send(member, "/outbox")
    assert harness.last_text(member.chat_id) == "Очередь уведомлений доступна только администратору."
    await harness.click(member, OutboxCB(action=OutboxAction.RETRY_FAILED))
    assert harness.alerts()[-1] == "Очередь уведомлений доступна только администратору."


# ---- over real HTTP -----------------------------------------------------------------------------------------


async def test_delivery_over_real_http_with_faults(
    fake_bot_api: FakeBotAPI, harness: Harness, team: Team, clock: VirtualClock, settings: Settings
) -> None:
    factory = harness.uow_factory
    chats = [team.seller.chat_id, team.rop.chat_id, team.mop.chat_id, 9100, 9101, 9102]
    await enqueue(factory, [(chats[i % len(chats)], f"http {i}") for i in range(18)])
    fake_bot_api.fail_next("sendMessage", 500, "Internal Server Error")
    fake_bot_api.drop_next("sendMessage")
    fake_bot_api.fail_next("sendMessage", 429, "Too Many Requests: retry after 2", retry_after=2)
    fake_bot_api.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user")
    fake_bot_api.fail_next("sendMessage", 400, "Bad Request: chat not found")

    http_settings = settings.model_copy(
        update={"bot": settings.bot.model_copy(update={"api_server": fake_bot_api.base_url})}
    )
    bot = create_bot(http_settings)
    try:
        worker = DeliveryWorker(bot, factory, settings.notifications, clock=clock)
        await worker.run(until_idle=True)
    finally:
        await bot.session.close()

    result = await rows(factory)
    delivered = Counter(r.text for r in fake_bot_api.sent())
    failed = [row for row in result if row.status == OutboxStatus.FAILED]
    assert sorted(row.last_error.split(":")[0] for row in failed) == [  # type: ignore[union-attr]
        "TelegramBadRequest",
        "TelegramForbiddenError",
    ]
    for row in result:
        assert delivered[row.payload["text"]] == (1 if row.status == OutboxStatus.SENT else 0)
    assert sum(1 for row in result if row.status == OutboxStatus.SENT) == 16
    assert fake_bot_api.calls("sendMessage", ok=False)  # the faults really happened over the wire


# ---- waking ------------------------------------------------------------------------------------------------


async def _sent_within(session: RecordingSession, count: int, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if len(session.of(SendMessage)) >= count:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_committed_notification_wakes_the_worker_instead_of_waiting_for_the_poll(
    factory: UnitOfWorkFactory, settings: Settings
) -> None:
    """As ``leadbot run`` wires it: the factory's ``on_outbox`` is the worker's ``wake``. The poll is
    30 s, so only the wake can get the message out in time."""
    session = RecordingSession()
    notifications = settings.notifications.model_copy(update={"poll_interval": timedelta(seconds=30)})
    worker = DeliveryWorker(make_bot(session), factory, notifications)
    factory.on_outbox = worker.wake
    worker.start()
    try:
        await asyncio.sleep(0.2)  # the worker has looked once and is waiting for its next poll
        await enqueue(factory, [(7001, "woken")])
        assert await _sent_within(session, 1, 2.0)
        # A unit that queued nothing (or rolled back) does not wake anyone.
        woken = []
        factory.on_outbox = lambda: woken.append(1)
        async with factory() as uow:
            await uow.outbox.enqueue(key="rolled-back", chat_id=7002, kind="test", payload=message_payload("x"))
            await uow.rollback()
            await uow.commit()
        assert woken == []
    finally:
        await worker.stop()


async def test_a_wake_while_the_worker_is_busy_is_not_lost(factory: UnitOfWorkFactory, settings: Settings) -> None:
    """Rows committed while the worker reads the outbox (after its query, before it sleeps) still go out
    at once: the wake is kept for the pause that follows."""
    session = RecordingSession()
    notifications = settings.notifications.model_copy(update={"poll_interval": timedelta(seconds=30)})
    worker = DeliveryWorker(make_bot(session), factory, notifications)
    factory.on_outbox = worker.wake
    refresh = worker._refresh
    calls = 0

    async def refresh_then_queue() -> None:
        nonlocal calls
        await refresh()
        calls += 1
        if calls == 1:  # the outbox was read (empty): a row is queued before the worker sleeps
            await enqueue(factory, [(7003, "during the refresh")])

    worker._refresh = refresh_then_queue  # type: ignore[method-assign]
    worker.start()
    try:
        assert await _sent_within(session, 1, 2.0)
    finally:
        await worker.stop()
