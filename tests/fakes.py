"""Telegram faked at the Bot API boundary: a session that records every call and answers like Telegram.

Modelled on aiogram's own tests/mocked_bot.py, but answers by itself (a sent message comes back as a
Message with a fresh id) so tests only queue the unusual answers: errors and fault injection.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.enums import ChatType, ParseMode
from aiogram.filters.callback_data import CallbackData
from aiogram.methods import (
    EditMessageReplyMarkup,
    EditMessageText,
    GetFile,
    GetMe,
    SendDocument,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiogram.types import (
    CallbackQuery,
    Chat,
    Contact,
    Document,
    File,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)

T = TypeVar("T")
BOT_ID = 42
BOT_TOKEN = f"{BOT_ID}:TEST-TOKEN"
BOT_USERNAME = "leadbot_test_bot"


class RecordingSession(BaseSession):
    """Records every outgoing Bot API call; answers each like Telegram would, unless told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[TelegramMethod[Any]] = []
        self._message_ids = itertools.count(1000)
        # Queued exceptions per method type, raised instead of answering (fault injection).
        self.failures: dict[type, deque[Exception]] = {}
        # Files users "uploaded", by file id: what GetFile finds and downloads stream.
        self.files: dict[str, bytes] = {}
        self.closed = True

    def fail_next(self, method_type: type, error: Exception) -> None:
        self.failures.setdefault(method_type, deque()).append(error)

    async def close(self) -> None:
        self.closed = True

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        self.closed = False
        self.requests.append(method)
        queue = self.failures.get(type(method))
        if queue:
            raise queue.popleft()
        return self._answer(method)  # type: ignore[return-value]

    def _answer(self, method: TelegramMethod[Any]) -> Any:
        now = datetime.now(UTC)
        bot_user = User(id=BOT_ID, is_bot=True, first_name="LeadBot", username=BOT_USERNAME)
        if isinstance(method, GetMe):
            return bot_user
        if isinstance(method, GetFile):
            content = self.files[method.file_id]
            return File(
                file_id=method.file_id,
                file_unique_id=f"u-{method.file_id}",
                file_size=len(content),
                file_path=f"documents/{method.file_id}",
            )
        if isinstance(method, SendDocument):
            return Message(
                message_id=next(self._message_ids),
                date=now,
                chat=Chat(id=int(method.chat_id), type=ChatType.PRIVATE),
                from_user=bot_user,
                caption=method.caption,
                document=Document(file_id=f"sent-{next(self._message_ids)}", file_unique_id="sent"),
            )
        if isinstance(method, SendMessage):
            chat_type = ChatType.PRIVATE if int(method.chat_id) > 0 else ChatType.SUPERGROUP
            return Message(
                message_id=next(self._message_ids),
                date=now,
                chat=Chat(id=int(method.chat_id), type=chat_type),
                from_user=bot_user,
                text=method.text,
                reply_markup=method.reply_markup,
                message_thread_id=method.message_thread_id,
            )
        if isinstance(method, EditMessageText | EditMessageReplyMarkup):
            if method.inline_message_id:
                return True
            assert method.chat_id is not None and method.message_id is not None
            return Message(
                message_id=method.message_id,
                date=now,
                chat=Chat(id=int(method.chat_id), type=ChatType.PRIVATE),
                from_user=bot_user,
                text=getattr(method, "text", None) or "",
                reply_markup=method.reply_markup,
            )
        returning = getattr(method, "__returning__", None)
        if returning is bool:
            return True
        return True

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        """A file's content (``files``), by the file id at the end of its download URL."""
        yield self.files[url.rsplit("/", 1)[-1]]

    # ---- what tests look at ----------------------------------------------------------------------

    def of(self, method_type: type[T]) -> list[T]:
        return [r for r in self.requests if isinstance(r, method_type)]

    def messages(self, chat_id: int | None = None) -> list[SendMessage]:
        return [m for m in self.of(SendMessage) if chat_id is None or int(m.chat_id) == chat_id]

    def last_text(self, chat_id: int | None = None) -> str:
        """Text of the last message sent or edited (in ``chat_id`` when given)."""
        for request in reversed(self.requests):
            if isinstance(request, SendMessage | EditMessageText) and (
                chat_id is None or (request.chat_id is not None and int(request.chat_id) == chat_id)
            ):
                return request.text
        raise AssertionError(f"no message was sent to {chat_id}")

    def clear(self) -> None:
        self.requests.clear()


def make_bot(session: RecordingSession | None = None) -> Bot:
    return Bot(
        token=BOT_TOKEN,
        session=session or RecordingSession(),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def tg_user(
    telegram_id: int,
    first_name: str = "Test",
    last_name: str | None = None,
    username: str | None = None,
    language_code: str | None = "ru",
) -> User:
    return User(
        id=telegram_id,
        is_bot=False,
        first_name=first_name,
        last_name=last_name,
        username=username,
        language_code=language_code,
    )


class UpdateFactory:
    """Builds real ``Update`` objects as Telegram would deliver them."""

    def __init__(self) -> None:
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)

    def message(
        self,
        user: User,
        text: str | None = None,
        *,
        chat_id: int | None = None,
        contact: Contact | None = None,
        thread_id: int | None = None,
    ) -> Update:
        chat_id = chat_id if chat_id is not None else user.id
        chat = Chat(id=chat_id, type=ChatType.PRIVATE if chat_id > 0 else ChatType.SUPERGROUP)
        message = Message(
            message_id=next(self._message_ids),
            date=datetime.now(UTC),
            chat=chat,
            from_user=user,
            text=text,
            contact=contact,
            message_thread_id=thread_id,
        )
        return Update(update_id=next(self._update_ids), message=message)

    def callback(
        self,
        user: User,
        data: str | CallbackData,
        *,
        message: Message | None = None,
        chat_id: int | None = None,
        message_id: int = 1,
    ) -> Update:
        packed = data.pack() if isinstance(data, CallbackData) else data
        if message is None:
            chat_id = chat_id if chat_id is not None else user.id
            message = Message(
                message_id=message_id,
                date=datetime.now(UTC),
                chat=Chat(id=chat_id, type=ChatType.PRIVATE if chat_id > 0 else ChatType.SUPERGROUP),
                from_user=User(id=BOT_ID, is_bot=True, first_name="LeadBot"),
                text="…",
            )
        query = CallbackQuery(
            id=str(next(self._callback_ids)),
            from_user=user,
            chat_instance="ci",
            message=message,
            data=packed,
        )
        return Update(update_id=next(self._update_ids), callback_query=query)


def buttons(markup: InlineKeyboardMarkup | Any | None) -> list[tuple[str, str]]:
    """(text, callback_data) of every inline button, row by row."""
    if markup is None:
        return []
    assert isinstance(markup, InlineKeyboardMarkup)
    return [(b.text, b.callback_data or b.url or "") for row in markup.inline_keyboard for b in row]


def find_button(markup: Any, predicate: Callable[[str, str], bool]) -> str:
    for text, data in buttons(markup):
        if predicate(text, data):
            return data
    raise AssertionError(f"no such button in {buttons(markup)}")
