"""A fake Telegram Bot API server on 127.0.0.1, for tests that go through real HTTP.

``tests/fakes.py`` fakes Telegram inside aiogram (a recording session). This module fakes it one level
lower: an aiohttp web server that answers ``POST /bot<token>/<method>`` like api.telegram.org, so the
production bot — ``bot.factory.create_bot`` with ``settings.bot.api_server`` pointing here, its real
``AiohttpSession``, long polling, timeouts, retries — runs exactly as it will in production, only
against a server that never leaves the machine.

What it does:

* speaks enough of the Bot API for aiogram: ``getMe``, ``getUpdates`` (long polling: waits up to the
  ``timeout`` parameter for queued updates and honours ``offset``), ``deleteWebhook``, ``sendMessage``
  (answered with a proper ``Message`` and a fresh ``message_id``), ``editMessageText``,
  ``editMessageReplyMarkup``, ``answerCallbackQuery``, ``setMyCommands``, ``deleteMyCommands``,
  ``deleteMessage``, ``sendChatAction``; more can be added with :meth:`FakeBotAPI.handle`;
* records every request, in order, as a :class:`Recorded` (method, decoded params, chat id, the HTTP
  status it answered with);
* queues updates: :meth:`FakeBotAPI.push_update` takes a raw update dict,
  :meth:`FakeBotAPI.push_message` and :meth:`FakeBotAPI.push_callback` build the usual ones;
* injects faults into the next call of a method: :meth:`FakeBotAPI.fail_next` (an error answer — 429
  with ``parameters.retry_after``, 403, 400, 500…), :meth:`FakeBotAPI.drop_next` (the connection is
  closed without an answer), :meth:`FakeBotAPI.delay_next` (the answer comes late: client timeouts);
* optionally answers every method but ``getUpdates`` after a fixed round trip (``delay``, in seconds,
  settable at any time): requests overlap, as Telegram's do; each :class:`Recorded` carries when it
  arrived and when it was answered (``time.monotonic()``), for latency benchmarks;
* optionally enforces Telegram's flood limits (``enforce_limits=True``): about 30 sends a second in
  total, one a second to one chat, 20 a minute to one group; a send over a limit is answered with 429
  and ``retry_after`` like Telegram does, and counted (:attr:`FakeBotAPI.limit_hits`). The clock is
  injectable, so limit tests need no sleeping.

Typical use (the ``fake_bot_api`` fixture in ``tests/conftest.py`` does the first two lines)::

    async with FakeBotAPI() as api:
        settings = settings.model_copy(update={"bot": settings.bot.model_copy(update={"api_server": api.base_url})})
        bot = create_bot(settings)
        ...
        api.push_message(1001, "/start")
        reply = await api.wait_for("sendMessage", chat_id=1001)
        assert "Hello" in reply.params["text"]

Only the token given to the constructor is accepted (401 otherwise), so a test cannot talk to it by
accident with a real token; the server binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import BOT_ID, BOT_TOKEN, BOT_USERNAME

__all__ = ["SEND_METHODS", "FakeBotAPI", "Recorded"]

# Methods that post a message and so count against Telegram's flood limits.
SEND_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "sendVideo",
        "sendAudio",
        "sendVoice",
        "sendAnimation",
        "sendSticker",
        "sendLocation",
        "sendContact",
        "sendMediaGroup",
        "copyMessage",
        "forwardMessage",
    }
)
# Parameters that are plain text even when they look like JSON ("123", "[draft]", "true").
_TEXT_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "action",
        "language_code",
        "business_connection_id",
        "message_effect_id",
        "description",
        "short_description",
        "name",
    }
)

Params = dict[str, Any]
MethodHandler = Callable[["FakeBotAPI", Params], Awaitable[Any] | Any]


@dataclass(slots=True)
class Recorded:
    """One request the server received."""

    method: str
    params: Params
    chat_id: int | str | None
    # The HTTP status the server answered with; None when the connection was dropped.
    status: int | None = 200
    # time.monotonic() when the request arrived and when its answer went out (None until then).
    received_at: float = 0.0
    answered_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """The inline keyboard sent with the request, as (caption, callback data) in reading order."""
        markup = self.params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        if not isinstance(markup, dict):
            return []
        return [(b["text"], b.get("callback_data", "")) for row in markup.get("inline_keyboard", []) for b in row]


@dataclass(slots=True)
class _Fault:
    kind: str  # "fail" | "drop" | "delay"
    status: int = 500
    description: str = ""
    retry_after: int | None = None
    seconds: float = 0.0


@dataclass
class _Windows:
    """Send timestamps per limit, for the sliding-window flood control."""

    everything: deque[float] = field(default_factory=deque)
    per_chat: defaultdict[int | str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    per_group: defaultdict[int | str, deque[float]] = field(default_factory=lambda: defaultdict(deque))


class FakeBotAPI:
    """A Bot API server on ``127.0.0.1:<free port>``; see the module docstring."""

    def __init__(
        self,
        *,
        token: str = BOT_TOKEN,
        bot_id: int = BOT_ID,
        bot_username: str = BOT_USERNAME,
        enforce_limits: bool = False,
        global_per_second: int = 30,
        per_chat_per_second: int = 1,
        group_per_minute: int = 20,
        clock: Callable[[], float] = time.monotonic,
        delay: float = 0.0,
    ) -> None:
        self.token = token
        # Seconds every method but getUpdates waits before it is answered (a Telegram round trip).
        self.delay = delay
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "LeadBot",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.enforce_limits = enforce_limits
        self.global_per_second = global_per_second
        self.per_chat_per_second = per_chat_per_second
        self.group_per_minute = group_per_minute
        self.clock = clock

        self.requests: list[Recorded] = []
        # Sends refused by the flood limits (not counting faults injected with fail_next).
        self.limit_hits = 0

        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._callback_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._faults: defaultdict[str, deque[_Fault]] = defaultdict(deque)
        self._windows = _Windows()
        self._handlers: dict[str, MethodHandler] = {
            "getMe": lambda _api, _p: self.bot_user,
            "deleteWebhook": _true,
            "setWebhook": _true,
            "logOut": _true,
            "close": _true,
            "answerCallbackQuery": _true,
            "setMyCommands": _true,
            "deleteMyCommands": _true,
            "deleteMessage": _true,
            "deleteMessages": _true,
            "sendChatAction": _true,
            "sendMessage": FakeBotAPI._send_message,
            "editMessageText": FakeBotAPI._edit_message,
            "editMessageReplyMarkup": FakeBotAPI._edit_message,
        }
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What goes into ``settings.bot.api_server``."""
        if not self.port:
            raise RuntimeError("the fake Bot API server is not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        # A short shutdown timeout: a delayed or long-polling handler must not hold the test up.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the port the system picked (public API)

    async def stop(self) -> None:
        self._closing.set()
        self._new_update.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotAPI:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ---- updates -----------------------------------------------------------------------------------

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (``update_id`` is filled in when missing) for the next ``getUpdates``."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._updates.append(update)
        self._new_update.set()
        return update

    def push_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        first_name: str = "Test",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "ru",
    ) -> dict[str, Any]:
        """Queue a text message from a user (in their private chat unless ``chat_id`` says otherwise)."""
        chat_id = user_id if chat_id is None else chat_id
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": _user(user_id, first_name, last_name, username, language_code),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.push_update({"message": message})

    def push_callback(
        self,
        user_id: int,
        data: str,
        *,
        chat_id: int | None = None,
        message_id: int = 1,
        first_name: str = "Test",
        language_code: str | None = "ru",
    ) -> dict[str, Any]:
        """Queue a button press (``data`` is the packed callback data, e.g. ``SomeCB(...).pack()``)."""
        chat_id = user_id if chat_id is None else chat_id
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self.bot_user,
            "text": "…",
        }
        query = {
            "id": str(next(self._callback_ids)),
            "from": _user(user_id, first_name, None, None, language_code),
            "chat_instance": "ci",
            "message": message,
            "data": data,
        }
        return self.push_update({"callback_query": query})

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by a later ``offset``."""
        return len(self._updates)

    # ---- fault injection ---------------------------------------------------------------------------

    def fail_next(self, method: str, status: int, description: str, retry_after: int | None = None) -> None:
        """Answer the next ``method`` call with an error (``retry_after`` goes into ``parameters``).

        Several calls queue several faults, used one per request in order.
        """
        self._faults[method].append(_Fault("fail", status=status, description=description, retry_after=retry_after))

    def drop_next(self, method: str) -> None:
        """Close the connection of the next ``method`` call without answering (a network error)."""
        self._faults[method].append(_Fault("drop"))

    def delay_next(self, method: str, seconds: float) -> None:
        """Answer the next ``method`` call only after ``seconds`` (or when the server stops)."""
        self._faults[method].append(_Fault("delay", seconds=seconds))

    def handle(self, method: str, handler: MethodHandler) -> None:
        """Answer ``method`` with ``handler(api, params)`` (sync or async), returning the ``result``."""
        self._handlers[method] = handler

    # ---- what tests look at ------------------------------------------------------------------------

    def calls(self, method: str | None = None, *, chat_id: int | None = None, ok: bool | None = None) -> list[Recorded]:
        """Recorded requests, optionally of one method, to one chat, answered successfully or not."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (chat_id is None or r.chat_id == chat_id)
            and (ok is None or r.ok == ok)
        ]

    def sent(self, chat_id: int | None = None) -> list[Recorded]:
        """Messages actually delivered (``sendMessage`` answered with 200)."""
        return self.calls("sendMessage", chat_id=chat_id, ok=True)

    @property
    def too_many_requests(self) -> int:
        """Every 429 the server answered: flood limits and injected faults alike."""
        return sum(1 for r in self.requests if r.status == 429)

    async def wait_for(
        self,
        method: str,
        *,
        chat_id: int | None = None,
        predicate: Callable[[Recorded], bool] | None = None,
        after: int = 0,
        timeout: float = 10.0,  # noqa: ASYNC109 - a bounded wait for the test, not an I/O timeout
    ) -> Recorded:
        """The first request (from index ``after`` on) matching; waits up to ``timeout`` seconds for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for request in self.requests[after:]:
                if (
                    request.method == method
                    and (chat_id is None or request.chat_id == chat_id)
                    and (predicate is None or predicate(request))
                ):
                    return request
            if asyncio.get_running_loop().time() >= deadline:
                seen = [(r.method, r.chat_id) for r in self.requests]
                raise AssertionError(f"no {method} to {chat_id} within {timeout}s; the server saw {seen}")
            await asyncio.sleep(0.02)

    def clear(self) -> None:
        self.requests.clear()

    # ---- the HTTP side -----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        received_at = time.monotonic()
        method = request.match_info["method"]
        params = await _read_params(request)
        chat_id = _chat_id(params.get("chat_id"))
        record = Recorded(method=method, params=params, chat_id=chat_id, received_at=received_at)
        self.requests.append(record)
        response = await self._answer(request, method, params, chat_id, record)
        record.answered_at = time.monotonic()
        return response

    async def _answer(
        self, request: web.Request, method: str, params: Params, chat_id: int | str | None, record: Recorded
    ) -> web.StreamResponse:
        if self.delay > 0 and method != "getUpdates":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.delay)

        if request.match_info["token"] != self.token:
            return self._error(record, 401, "Unauthorized")

        faults = self._faults.get(method)
        fault = faults.popleft() if faults else None
        if fault is not None and fault.kind == "drop":
            record.status = None
            if request.transport is not None:
                request.transport.close()
            # The client already saw the connection close; this answer goes nowhere.
            return web.Response(status=499)
        if fault is not None and fault.kind == "delay":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), fault.seconds)
        if fault is not None and fault.kind == "fail":
            return self._error(record, fault.status, fault.description, fault.retry_after)

        if method in SEND_METHODS and self.enforce_limits:
            retry_after = self._over_limit(chat_id)
            if retry_after is not None:
                self.limit_hits += 1
                return self._error(record, 429, f"Too Many Requests: retry after {retry_after}", retry_after)

        if method == "getUpdates":
            return web.json_response({"ok": True, "result": await self._get_updates(params)})
        handler = self._handlers.get(method)
        if handler is None:
            return self._error(record, 404, "Not Found: method not found")
        result = handler(self, params)
        if asyncio.iscoroutine(result):
            result = await result
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(record: Recorded, status: int, description: str, retry_after: int | None = None) -> web.Response:
        record.status = status
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return web.json_response(body, status=status)

    async def _get_updates(self, params: Params) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            # Telegram forgets every update below the offset: they are confirmed.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._updates and not self._closing.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), left)
            except TimeoutError:
                break
        return self._updates[:limit]

    def _over_limit(self, chat_id: int | str | None) -> int | None:
        """Seconds to wait when a send now would break a flood limit; records the send otherwise."""
        now = self.clock()
        windows = self._windows
        checks: list[tuple[deque[float], float, int]] = [(windows.everything, 1.0, self.global_per_second)]
        if chat_id is not None:
            checks.append((windows.per_chat[chat_id], 1.0, self.per_chat_per_second))
            if isinstance(chat_id, str) or chat_id < 0:
                checks.append((windows.per_group[chat_id], 60.0, self.group_per_minute))
        wait = 0.0
        for stamps, span, limit in checks:
            while stamps and stamps[0] <= now - span:
                stamps.popleft()
            if len(stamps) >= limit:
                wait = max(wait, stamps[0] + span - now)
        if wait > 0:
            return max(1, math.ceil(wait))
        for stamps, _span, _limit in checks:
            stamps.append(now)
        return None

    # ---- answers -----------------------------------------------------------------------------------

    def _chat(self, chat_id: int | str) -> dict[str, Any]:
        if isinstance(chat_id, str):
            return {"id": -1000000000001, "type": "channel", "username": chat_id.lstrip("@")}
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Test"}
        return {"id": chat_id, "type": "supergroup", "title": "Team", "is_forum": False}

    def _message(self, params: Params, message_id: int) -> dict[str, Any]:
        chat_id = _chat_id(params.get("chat_id"))
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id if chat_id is not None else 0),
            "from": self.bot_user,
            "text": str(params.get("text", "")),
        }
        if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params["reply_markup"]:
            message["reply_markup"] = params["reply_markup"]
        if params.get("message_thread_id"):
            message["message_thread_id"] = int(params["message_thread_id"])
            message["is_topic_message"] = True
        return message

    def _send_message(self, params: Params) -> dict[str, Any]:
        return self._message(params, next(self._message_ids))

    def _edit_message(self, params: Params) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        return self._message(params, int(params.get("message_id") or 0))


def _true(_api: FakeBotAPI, _params: Params) -> bool:
    return True


def _user(
    user_id: int, first_name: str, last_name: str | None, username: str | None, language_code: str | None
) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if last_name:
        user["last_name"] = last_name
    if username:
        user["username"] = username
    if language_code:
        user["language_code"] = language_code
    return user


def _chat_id(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def _decode(key: str, value: str) -> Any:
    if key in _TEXT_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _read_params(request: web.Request) -> Params:
    """Parameters the way Telegram reads them: query string, then a JSON or form body."""
    params: Params = {key: _decode(key, value) for key, value in request.query.items()}
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    params[key] = _decode(key, value)
                else:  # an uploaded file
                    params[key] = getattr(value, "filename", None) or key
    return params


def max_per_window(stamps: list[float], span: float) -> int:
    """The most of the sorted ``stamps`` within any ``span`` seconds (sends in a second, say)."""
    best, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best
