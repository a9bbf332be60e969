"""A stand-in for the Telegram Bot API on 127.0.0.1, and the web page that plays Telegram's app.

One aiohttp server does both:

* ``/bot<token>/<method>`` answers the bot the way api.telegram.org does, for what LeadBot uses:
  ``getMe``, ``getUpdates`` (long polling with ``offset`` and ``timeout``), ``deleteWebhook``,
  ``setMyCommands``/``deleteMyCommands``, ``sendMessage``, ``editMessageText``,
  ``editMessageReplyMarkup``, ``answerCallbackQuery``, ``sendChatAction``, ``deleteMessage``, and
  ``sendDocument``/``sendPhoto``/``sendMediaGroup`` (the file is kept and linked from the chat). Any
  other method is answered ``ok: true`` with a log line. Only the demo's token is accepted.
* ``/`` is the page; ``/demo/api/...`` is what it calls: the people, every chat's messages since a
  revision (the page polls it), and "this person typed this" / "pressed that button", which become
  ``message`` and ``callback_query`` updates for the bot's next ``getUpdates``.

Everything lives in memory and is lost when the demo stops; the server binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import BodyPartReader, web

from bot.demo.html import plain_text, safe_html

log = logging.getLogger(__name__)

_FILE_METHODS = {
    "sendDocument": "document",
    "sendPhoto": "photo",
    "sendVideo": "video",
    "sendAudio": "audio",
    "sendVoice": "voice",
    "sendAnimation": "animation",
}
_MAX_FILE_BYTES = 20 * 1024 * 1024
_MAX_TEXT = 4096


@dataclass(frozen=True, slots=True)
class Person:
    """Someone the page can be: a Telegram account talking to the bot in a private chat."""

    telegram_id: int
    first_name: str
    last_name: str | None
    role: str  # a caption for the picker ("Администратор", "Новый сотрудник"…)

    @property
    def name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def as_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.telegram_id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        user["language_code"] = "ru"
        return user


@dataclass(slots=True)
class ChatMessage:
    message_id: int
    chat_id: int
    from_bot: bool
    text: str  # as sent: Telegram HTML for the bot's messages, plain for a person's
    parse_mode: str | None
    keyboard: list[list[dict[str, str]]]
    rev: int
    date: int
    edited: bool = False
    deleted: bool = False
    files: list[dict[str, str]] = field(default_factory=list)  # {"name", "url", "kind"}

    def for_page(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "from_bot": self.from_bot,
            "html": safe_html(self.text, self.parse_mode),
            "keyboard": self.keyboard,
            "rev": self.rev,
            "date": self.date,
            "edited": self.edited,
            "deleted": self.deleted,
            "files": self.files,
        }


@dataclass(slots=True)
class Alert:
    """What ``answerCallbackQuery`` showed a person: a toast, or an alert box with ``show_alert``."""

    chat_id: int
    text: str
    show_alert: bool
    rev: int


@dataclass(slots=True)
class StoredFile:
    name: str
    content_type: str
    data: bytes


class DemoTelegram:
    """The Bot API stand-in and the page's backend; see the module docstring."""

    def __init__(self, token: str, people: list[Person], *, bot_id: int, bot_username: str) -> None:
        self.token = token
        self.people = {person.telegram_id: person for person in people}
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "LeadBot",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.messages: dict[tuple[int, int], ChatMessage] = {}
        self.alerts: list[Alert] = []
        self.files: dict[str, StoredFile] = {}
        self.commands: list[dict[str, str]] = []
        self._rev = itertools.count(1)
        self.rev = 0
        self._message_ids = itertools.count(1)
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._callbacks: dict[str, int] = {}  # callback_query id -> the chat it was pressed in
        self._updates: list[dict[str, Any]] = []
        self._new_update = asyncio.Event()
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The page's address, and what goes into ``settings.bot.api_server``."""
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_FILE_BYTES * 2, middlewares=[self._local_only])
        app.router.add_route("*", "/bot{token}/{method}", self._bot_api)
        app.router.add_get("/", self._page)
        app.router.add_get("/demo/api/people", self._people)
        app.router.add_get("/demo/api/changes", self._changes)
        app.router.add_post("/demo/api/chat/{chat_id}/send", self._send)
        app.router.add_post("/demo/api/chat/{chat_id}/press", self._press)
        app.router.add_get("/demo/files/{file_id}", self._file)
        return app

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
            break

    async def stop(self) -> None:
        self._closing.set()
        self._new_update.set()
        self._changed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _local_only(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Answer only requests addressed to this machine by name: another site open in the same browser
        can neither reach the page through a DNS name pointing here (rebinding) nor post to it as a form."""
        if request.host.rsplit(":", 1)[0].strip("[]") not in ("127.0.0.1", "localhost", "::1"):
            raise web.HTTPMisdirectedRequest(text="the demo answers on 127.0.0.1 only")
        if (
            request.method == "POST"
            and request.path.startswith("/demo/")
            and request.content_type != "application/json"
        ):
            raise web.HTTPUnsupportedMediaType(text="expected application/json")
        response: web.StreamResponse = await handler(request)
        return response

    def _next_rev(self) -> int:
        self.rev = next(self._rev)
        self._changed.set()
        return self.rev

    # ---- what a person does on the page ----------------------------------------------------------

    def person_says(self, chat_id: int, text: str) -> ChatMessage:
        """A person sent ``text``: it appears in their chat and reaches the bot as a ``message`` update."""
        person = self._person(chat_id)
        message = self._store(chat_id, text, from_bot=False, parse_mode=None, keyboard=[])
        raw: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": self._chat(chat_id),
            "from": person.as_user(),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            raw["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        self._push({"message": raw})
        return message

    def person_presses(self, chat_id: int, message_id: int, data: str) -> str:
        """A person tapped an inline button: a ``callback_query`` update about that very message."""
        person = self._person(chat_id)
        message = self.messages.get((chat_id, message_id))
        if message is None or message.deleted:
            raise LookupError("no such message in this chat")
        if not any(button.get("callback_data") == data for row in message.keyboard for button in row):
            raise LookupError("no such button on this message")
        query_id = str(next(self._callback_ids))
        self._callbacks[query_id] = chat_id
        self._push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": person.as_user(),
                    "chat_instance": str(chat_id),
                    "message": self._as_telegram(message),
                    "data": data,
                }
            }
        )
        return query_id

    @property
    def unanswered_callbacks(self) -> int:
        """Button presses the bot has not answered (``answerCallbackQuery``) yet."""
        return len(self._callbacks)

    def chat(self, chat_id: int) -> list[ChatMessage]:
        """A chat's messages in order, deleted ones left out."""
        found = [m for (chat, _), m in self.messages.items() if chat == chat_id and not m.deleted]
        return sorted(found, key=lambda m: m.message_id)

    def _person(self, chat_id: int) -> Person:
        person = self.people.get(chat_id)
        if person is None:
            raise LookupError("nobody with this id in the demo")
        return person

    def _push(self, update: dict[str, Any]) -> None:
        update["update_id"] = next(self._update_ids)
        self._updates.append(update)
        self._new_update.set()

    # ---- the page's HTTP side --------------------------------------------------------------------

    async def _page(self, _request: web.Request) -> web.Response:
        page = resources.files("bot.demo").joinpath("page.html").read_text(encoding="utf-8")
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
                "Cache-Control": "no-store",
            },
        )

    async def _people(self, _request: web.Request) -> web.Response:
        people = [
            {"id": p.telegram_id, "name": p.name, "role": p.role, "initials": _initials(p)}
            for p in self.people.values()
        ]
        return web.json_response({"people": people, "bot": self.bot_user["username"], "commands": self.commands})

    async def _changes(self, request: web.Request) -> web.Response:
        """Messages and alerts changed after revision ``since``; waits up to ``wait`` seconds for one."""
        since = _int(request.query.get("since"), 0)
        wait = min(max(_float(request.query.get("wait"), 0.0), 0.0), 25.0)
        if self.rev <= since and wait > 0 and not self._closing.is_set():
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        messages = [m.for_page() for m in sorted(self.messages.values(), key=lambda m: m.rev) if m.rev > since]
        alerts = [
            {"chat_id": a.chat_id, "text": a.text, "show_alert": a.show_alert, "rev": a.rev}
            for a in self.alerts
            if a.rev > since
        ]
        return web.json_response({"rev": self.rev, "messages": messages, "alerts": alerts})

    async def _send(self, request: web.Request) -> web.Response:
        chat_id = _int(request.match_info["chat_id"], 0)
        body = await _json_body(request)
        text = str(body.get("text", "")).strip()
        if not text:
            raise web.HTTPBadRequest(text="empty message")
        if len(text) > _MAX_TEXT:
            raise web.HTTPBadRequest(text="a message is at most 4096 characters")
        try:
            message = self.person_says(chat_id, text)
        except LookupError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.json_response({"message_id": message.message_id, "rev": message.rev})

    async def _press(self, request: web.Request) -> web.Response:
        chat_id = _int(request.match_info["chat_id"], 0)
        body = await _json_body(request)
        try:
            query_id = self.person_presses(chat_id, _int(body.get("message_id"), 0), str(body.get("data", "")))
        except LookupError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.json_response({"callback_query_id": query_id})

    async def _file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            raise web.HTTPNotFound()
        disposition = "inline" if stored.content_type.startswith("image/") else "attachment"
        return web.Response(
            body=stored.data,
            content_type=stored.content_type,
            headers={
                "Content-Disposition": f"{disposition}; filename*=UTF-8''{_quote(stored.name)}",
                "X-Content-Type-Options": "nosniff",
            },
        )

    # ---- the Bot API side ------------------------------------------------------------------------

    async def _bot_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        params, uploads = await _read_params(request)
        if method == "getUpdates":
            return _ok(await self._get_updates(params))
        try:
            result = self._call(method, params, uploads)
        except _BadRequest as exc:
            return _error(400, f"Bad Request: {exc}")
        return _ok(result)

    def _call(self, method: str, params: dict[str, Any], uploads: dict[str, StoredFile]) -> Any:
        if method == "getMe":
            return self.bot_user
        if method in ("deleteWebhook", "setWebhook", "logOut", "close", "sendChatAction", "deleteMyCommands"):
            return True
        if method == "setMyCommands":
            commands = params.get("commands")
            if isinstance(commands, list) and not params.get("scope"):
                self.commands = [c for c in commands if isinstance(c, dict)]
            return True
        if method == "sendMessage":
            return self._send_message(params)
        if method in ("editMessageText", "editMessageReplyMarkup", "editMessageCaption"):
            return self._edit(method, params)
        if method == "answerCallbackQuery":
            return self._answer_callback(params)
        if method in ("deleteMessage", "deleteMessages"):
            return self._delete(params)
        if method in _FILE_METHODS:
            return self._send_file(_FILE_METHODS[method], params, uploads)
        if method == "sendMediaGroup":
            return self._send_media_group(params, uploads)
        log.info("demo Bot API: %s is not imitated; answered ok", method)
        return True

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = _int(params.get("offset"), 0)
        limit = _int(params.get("limit"), 100) or 100
        timeout = min(_float(params.get("timeout"), 0.0), 50.0)
        if offset:
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

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat_id(params)
        text = str(params.get("text", ""))
        if not text.strip():
            raise _BadRequest("message text is empty")
        if len(plain_text(text, params.get("parse_mode"))) > _MAX_TEXT:
            raise _BadRequest("message is too long")
        message = self._store(
            chat_id, text, from_bot=True, parse_mode=params.get("parse_mode"), keyboard=_keyboard(params)
        )
        return self._as_telegram(message)

    def _edit(self, method: str, params: dict[str, Any]) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        message = self.messages.get((_chat_id(params), _int(params.get("message_id"), 0)))
        if message is None or message.deleted:
            raise _BadRequest("message to edit not found")
        keyboard = _keyboard(params)
        if method == "editMessageText":
            text = str(params.get("text", ""))
            if not text.strip():
                raise _BadRequest("message text is empty")
            parse_mode = params.get("parse_mode")
            if text == message.text and parse_mode == message.parse_mode and keyboard == message.keyboard:
                raise _BadRequest(
                    "message is not modified: specified new message content and reply markup are exactly the same "
                    "as a current content and reply markup of the message"
                )
            message.text, message.parse_mode = text, parse_mode
        elif method == "editMessageCaption":
            message.text, message.parse_mode = str(params.get("caption", "")), params.get("parse_mode")
        elif keyboard == message.keyboard:
            raise _BadRequest("message is not modified")
        message.keyboard = keyboard
        message.edited = True
        message.rev = self._next_rev()
        return self._as_telegram(message)

    def _answer_callback(self, params: dict[str, Any]) -> bool:
        chat_id = self._callbacks.pop(str(params.get("callback_query_id", "")), None)
        if chat_id is None:
            raise _BadRequest("query is too old and response timeout expired or query ID is invalid")
        text = str(params.get("text") or "")
        if text:
            show_alert = params.get("show_alert") in (True, "true", "True", 1, "1")
            self.alerts.append(Alert(chat_id, text, show_alert, self._next_rev()))
        return True

    def _delete(self, params: dict[str, Any]) -> bool:
        chat_id = _chat_id(params)
        ids = params.get("message_ids") if params.get("message_ids") is not None else [params.get("message_id")]
        found = False
        for message_id in ids if isinstance(ids, list) else []:
            message = self.messages.get((chat_id, _int(message_id, 0)))
            if message is not None and not message.deleted:
                message.deleted = True
                message.rev = self._next_rev()
                found = True
        if not found:
            raise _BadRequest("message to delete not found")
        return True

    def _keep_file(self, kind: str, value: Any, uploads: dict[str, StoredFile]) -> dict[str, str]:
        stored: StoredFile | None = None
        if isinstance(value, str) and value.startswith("attach://"):
            stored = uploads.get(value.removeprefix("attach://"))
        elif isinstance(value, str):
            stored = uploads.get(value)
        if stored is None:  # a file_id or a URL: nothing to keep
            return {"kind": kind, "name": str(value or kind), "url": ""}
        file_id = f"f{next(self._file_ids)}"
        self.files[file_id] = stored
        return {"kind": kind, "name": stored.name, "url": f"/demo/files/{file_id}"}

    def _send_file(self, kind: str, params: dict[str, Any], uploads: dict[str, StoredFile]) -> dict[str, Any]:
        kept = self._keep_file(kind, params.get(kind), uploads)
        message = self._store(
            _chat_id(params),
            str(params.get("caption") or ""),
            from_bot=True,
            parse_mode=params.get("parse_mode"),
            keyboard=_keyboard(params),
            files=[kept],
        )
        return self._as_telegram(message)

    def _send_media_group(self, params: dict[str, Any], uploads: dict[str, StoredFile]) -> list[dict[str, Any]]:
        media = params.get("media")
        if not isinstance(media, list) or not media:
            raise _BadRequest("media is empty")
        sent = []
        for item in media:
            if not isinstance(item, dict):
                continue
            kind = str(item.get("type") or "document")
            kept = self._keep_file(kind, item.get("media"), uploads)
            message = self._store(
                _chat_id(params),
                str(item.get("caption") or ""),
                from_bot=True,
                parse_mode=item.get("parse_mode"),
                keyboard=[],
                files=[kept],
            )
            sent.append(self._as_telegram(message))
        return sent

    # ---- messages --------------------------------------------------------------------------------

    def _store(
        self,
        chat_id: int,
        text: str,
        *,
        from_bot: bool,
        parse_mode: Any,
        keyboard: list[list[dict[str, str]]],
        files: list[dict[str, str]] | None = None,
    ) -> ChatMessage:
        message = ChatMessage(
            message_id=next(self._message_ids),
            chat_id=chat_id,
            from_bot=from_bot,
            text=text,
            parse_mode=str(parse_mode) if parse_mode else None,
            keyboard=keyboard,
            rev=self._next_rev(),
            date=int(time.time()),
            files=files or [],
        )
        self.messages[(chat_id, message.message_id)] = message
        return message

    def _chat(self, chat_id: int) -> dict[str, Any]:
        person = self.people.get(chat_id)
        if chat_id > 0:
            chat: dict[str, Any] = {
                "id": chat_id,
                "type": "private",
                "first_name": person.first_name if person else "?",
            }
            if person is not None and person.last_name:
                chat["last_name"] = person.last_name
            return chat
        return {"id": chat_id, "type": "supergroup", "title": "Team"}

    def _as_telegram(self, message: ChatMessage) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": self._chat(message.chat_id),
            "from": self.bot_user if message.from_bot else self._person(message.chat_id).as_user(),
        }
        text = plain_text(message.text, message.parse_mode)
        if message.files:
            raw["caption"] = text
            raw["document"] = {"file_id": message.files[0]["name"], "file_unique_id": message.files[0]["name"]}
        else:
            raw["text"] = text
        if message.edited:
            raw["edit_date"] = int(time.time())
        if message.keyboard:
            raw["reply_markup"] = {"inline_keyboard": message.keyboard}
        return raw


class _BadRequest(Exception):
    pass


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)


def _initials(person: Person) -> str:
    return "".join(part[0] for part in (person.first_name, person.last_name or "") if part).upper()


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _chat_id(params: dict[str, Any]) -> int:
    chat_id = _int(params.get("chat_id"), 0)
    if not chat_id:
        raise _BadRequest("chat not found")
    return chat_id


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _keyboard(params: dict[str, Any]) -> list[list[dict[str, str]]]:
    """The inline keyboard of ``reply_markup`` (reply keyboards and others are not shown)."""
    markup = params.get("reply_markup")
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError:
            return []
    if not isinstance(markup, dict) or not isinstance(markup.get("inline_keyboard"), list):
        return []
    rows = []
    for row in markup["inline_keyboard"]:
        buttons = []
        for button in row if isinstance(row, list) else []:
            if not isinstance(button, dict):
                continue
            kept = {"text": str(button.get("text", ""))}
            for key in ("callback_data", "url"):
                if isinstance(button.get(key), str):
                    kept[key] = button[key]
            buttons.append(kept)
        rows.append(buttons)
    return rows


# Parameters that stay text even when they look like JSON ("123", "true").
_TEXT_PARAMS = frozenset({"text", "caption", "parse_mode", "callback_query_id", "inline_message_id", "url", "action"})


def _decode(key: str, value: str) -> Any:
    if key in _TEXT_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON body") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, StoredFile]]:
    """Parameters the way Telegram reads them (query string, then a JSON, form or multipart body)."""
    params: dict[str, Any] = {key: _decode(key, value) for key, value in request.query.items()}
    uploads: dict[str, StoredFile] = {}
    if not request.can_read_body:
        return params, uploads
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type == "multipart/form-data":
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                data = await part.read(decode=False)
                uploads[part.name] = StoredFile(
                    part.filename, part.headers.get("Content-Type", "application/octet-stream"), bytes(data)
                )
                params[part.name] = f"attach://{part.name}"
            else:
                params[part.name] = _decode(part.name, await part.text())
    else:
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, str):
                params[key] = _decode(key, value)
    return params, uploads
