"""Shared fixtures: a migrated SQLite file per test, settings, the team, and the production dispatcher
driven through a recording fake of the Bot API."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import shutil
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.methods import EditMessageText, SendMessage
from aiogram.types import Contact, Message
from aiogram.types import User as TgUser
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.factory import create_dispatcher
from db.engine import Database, open_database
from db.enums import Role
from db.migrate import upgrade
from db.models import Base, User
from db.uow import UnitOfWork, UnitOfWorkFactory
from handlers import errors as errors_router
from tests.fake_bot_api import FakeBotAPI
from tests.fakes import RecordingSession, UpdateFactory, buttons, make_bot, tg_user

# The HTTP API tests' fixtures (app, client, tokens) live beside them.
pytest_plugins = ["tests.api_support"]

ADMIN_TG = 1001

# A test that drives an update into the errors router's catch-all on purpose says so with this marker.
UNEXPECTED_ERROR_MARKER = "unexpected_error"


# The database the suite runs on: SQLite files by default; PostgreSQL when this names one (CI does both).
SERVER_DATABASE_URL = os.environ.get("LEADBOT_TEST_DATABASE_URL", "").strip()
# Conversation state in Redis instead of memory for the bot's tests, when this names one (CI does).
SERVER_REDIS_URL = os.environ.get("LEADBOT_TEST_REDIS_URL", "").strip()
# A test about SQLite itself (its files, its locks, its query plans) says so with this marker.
SQLITE_ONLY_MARKER = "sqlite_only"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{UNEXPECTED_ERROR_MARKER}: the test makes an update end in the errors router's catch-all"
    )
    config.addinivalue_line("markers", f"{SQLITE_ONLY_MARKER}: the test is about SQLite itself")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SERVER_DATABASE_URL:
        return
    skip = pytest.mark.skip(reason="about SQLite itself; the suite runs on PostgreSQL (LEADBOT_TEST_DATABASE_URL)")
    for item in items:
        if item.get_closest_marker(SQLITE_ONLY_MARKER) is not None:
            item.add_marker(skip)


class _Tracebacks(logging.Handler):
    """Keeps the ERROR records with a traceback: what the errors router's catch-all logs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """Fail any test during which a handled update ended in "something went wrong" with a traceback.

    Every update is expected to end in a clear answer; only tests marked ``unexpected_error`` (which
    provoke the catch-all on purpose) may log one.
    """
    collector = _Tracebacks()
    logger = logging.getLogger(errors_router.__name__)
    logger.addHandler(collector)
    try:
        result = yield
    finally:
        logger.removeHandler(collector)
    if collector.records and item.get_closest_marker(UNEXPECTED_ERROR_MARKER) is None:
        first = collector.records[0]
        raise AssertionError(
            f"{len(collector.records)} update(s) ended in the errors router's catch-all; first: "
            f"{first.getMessage()}: {first.exc_info[1] if first.exc_info else ''!r}"
        )
    return result


@pytest.fixture(scope="session", autouse=True)
def sql_statement_logging() -> Iterator[None]:
    """The whole suite runs with SQLAlchemy's statement logging on, as ``database.echo`` would turn it on:
    whatever the core does must work with it (and a path that bypasses it would go unseen)."""
    logger = logging.getLogger("sqlalchemy.engine")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate once; every test copies the file (much faster than migrating per test)."""
    path = tmp_path_factory.mktemp("template") / "template.db"

    async def build() -> None:
        database = open_database(f"sqlite+aiosqlite:///{path}")
        await upgrade(database.write_engine)
        await database.dispose()

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def server_database() -> Iterator[str]:
    """A PostgreSQL database of this run's own, made beside the one named, migrated once, dropped at the end.

    Its own, so two runs on one server (two checkouts, a developer beside CI) never empty each other's.
    """
    from sqlalchemy import make_url

    given = make_url(SERVER_DATABASE_URL)
    url = given.set(database=f"{given.database}_run_{os.getpid()}").render_as_string(hide_password=False)
    name = make_url(url).database

    async def admin(statement: str) -> None:
        database = open_database(SERVER_DATABASE_URL, pooled=False)
        try:
            async with database.write_engine.connect() as connection:
                await (await connection.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql(statement)
        finally:
            await database.dispose()

    async def create() -> None:
        await admin(f'DROP DATABASE IF EXISTS "{name}"')
        await admin(f'CREATE DATABASE "{name}"')
        database = open_database(url)
        try:
            await upgrade(database.write_engine)
        finally:
            await database.dispose()

    asyncio.run(create())
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _empty_server_database(url: str) -> None:
    """Every table emptied and its ids started again: a fresh database for the next test, in milliseconds."""

    async def empty() -> None:
        database = open_database(url)
        try:
            async with database.write_engine.begin() as connection:
                tables = ", ".join(
                    f'"{table.name}"' for table in Base.metadata.sorted_tables if table.name != "alembic_version"
                )
                await connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        finally:
            await database.dispose()

    # In a loop of its own: the test's loop may not have started yet, and this must finish first.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, empty()).result()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if SERVER_DATABASE_URL:
        url: str = request.getfixturevalue("server_database")
        _empty_server_database(url)
        return url
    template: Path = request.getfixturevalue("db_template")
    target = tmp_path / "leadbot.db"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings.model_validate(
        {"bot": {"token": "42:TEST-TOKEN"}, "database": {"url": db_url}, "access": {"admins": [ADMIN_TG]}}
    )


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = open_database(settings.database.url)
    yield database
    await database.dispose()


@pytest.fixture
def engine(database: Database) -> AsyncEngine:
    """The engine changes are written through (on SQLite, the one writer connection)."""
    return database.write_engine


@pytest.fixture
def uow_factory(database: Database, settings: Settings) -> UnitOfWorkFactory:
    return UnitOfWorkFactory(database, settings)


@dataclass
class Member:
    """A team member as both the database and Telegram see them."""

    user: User
    tg: TgUser

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def chat_id(self) -> int:
        return self.tg.id


@dataclass
class Team:
    admin: Member
    rop: Member
    mop: Member
    seller: Member
    seller2: Member
    finance: Member
    inactive: Member
    stranger: TgUser = field(default_factory=lambda: tg_user(9999, "Stranger"))

    def by_role(self, role: Role) -> Member:
        return {
            Role.ADMIN: self.admin,
            Role.ROP: self.rop,
            Role.MOP: self.mop,
            Role.SELLER: self.seller,
            Role.FINANCE: self.finance,
        }[role]


async def add_member(
    uow: UnitOfWork,
    telegram_id: int,
    role: Role,
    first: str,
    last: str | None = None,
    *,
    active: bool = True,
    language: str = "ru",
) -> Member:
    user = User(
        telegram_id=telegram_id, role=role, first_name=first, last_name=last, is_active=active, language=language
    )
    uow.session.add(user)
    await uow.session.flush()
    return Member(user=user, tg=tg_user(telegram_id, first, last, language_code=language))


@pytest.fixture
async def team(uow_factory: UnitOfWorkFactory) -> Team:
    async with uow_factory() as uow:
        members = Team(
            admin=await add_member(uow, ADMIN_TG, Role.ADMIN, "Админ", "Главный"),
            rop=await add_member(uow, 1002, Role.ROP, "Роп", "Петров"),
            mop=await add_member(uow, 1003, Role.MOP, "Моп", "Сидоров"),
            seller=await add_member(uow, 1004, Role.SELLER, "Продажник", "Иванов"),
            seller2=await add_member(uow, 1005, Role.SELLER, "Второй", "Продажник"),
            finance=await add_member(uow, 1006, Role.FINANCE, "Фин", "Финансов"),
            inactive=await add_member(uow, 1007, Role.SELLER, "Бывший", "Сотрудник", active=False),
        )
        await uow.commit()
    return members


@dataclass
class Harness:
    """The production dispatcher, fed real updates, talking to a recording fake of Telegram."""

    bot: Bot
    session: RecordingSession
    dp: Dispatcher
    settings: Settings
    uow_factory: UnitOfWorkFactory
    updates: UpdateFactory = field(default_factory=UpdateFactory)

    async def send(
        self,
        who: Member | TgUser,
        text: str | None = None,
        *,
        contact: Contact | None = None,
        chat_id: int | None = None,
    ) -> None:
        user = who.tg if isinstance(who, Member) else who
        await self.dp.feed_update(self.bot, self.updates.message(user, text, contact=contact, chat_id=chat_id))

    async def click(
        self,
        who: Member | TgUser,
        data: str | CallbackData,
        *,
        message: Message | None = None,
        chat_id: int | None = None,
    ) -> None:
        user = who.tg if isinstance(who, Member) else who
        await self.dp.feed_update(self.bot, self.updates.callback(user, data, message=message, chat_id=chat_id))

    def last(self, chat_id: int) -> SendMessage | EditMessageText:
        for request in reversed(self.session.requests):
            if (
                isinstance(request, SendMessage | EditMessageText)
                and request.chat_id is not None
                and int(request.chat_id) == chat_id
            ):
                return request
        raise AssertionError(f"nothing was sent to chat {chat_id}")

    def last_text(self, chat_id: int) -> str:
        return self.last(chat_id).text

    def last_buttons(self, chat_id: int) -> list[tuple[str, str]]:
        return buttons(self.last(chat_id).reply_markup)

    async def press(self, who: Member, text_part: str) -> None:
        """Press the button whose caption contains ``text_part`` in the last message to ``who``."""
        for text, data in self.last_buttons(who.chat_id):
            if text_part.casefold() in text.casefold():
                await self.click(who, data)
                return
        raise AssertionError(f"no button {text_part!r} in {self.last_buttons(who.chat_id)}")

    def alerts(self) -> list[str]:
        from aiogram.methods import AnswerCallbackQuery

        return [r.text or "" for r in self.session.of(AnswerCallbackQuery) if r.text]


@pytest.fixture
async def fsm_storage() -> AsyncIterator[BaseStorage]:
    """The conversation storage of the bot's tests: Redis with LEADBOT_TEST_REDIS_URL (keys of this test
    only, removed afterwards), else memory."""
    if not SERVER_REDIS_URL:
        memory = MemoryStorage()
        yield memory
        await memory.close()
        return
    from aiogram.fsm.storage.base import DefaultKeyBuilder
    from aiogram.fsm.storage.redis import RedisStorage
    from redis.asyncio import Redis

    prefix = f"leadbot-test-{os.getpid()}-{next(_STORAGE_NUMBERS)}"
    storage = RedisStorage(Redis.from_url(SERVER_REDIS_URL), key_builder=DefaultKeyBuilder(prefix=prefix))
    yield storage
    keys = [key async for key in storage.redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await storage.redis.delete(*keys)
    await storage.close()


_STORAGE_NUMBERS = itertools.count()


@pytest.fixture
def harness(settings: Settings, database: Database, fsm_storage: BaseStorage) -> Iterator[Harness]:
    session = RecordingSession()
    bot = make_bot(session)
    dp = create_dispatcher(settings, database, storage=fsm_storage)
    yield Harness(bot=bot, session=session, dp=dp, settings=settings, uow_factory=dp["uow_factory"])


@pytest.fixture
async def fake_bot_api() -> AsyncIterator[FakeBotAPI]:
    """A fake Bot API server on 127.0.0.1 (tests/fake_bot_api.py), started and stopped around the test."""
    async with FakeBotAPI() as server:
        yield server


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any] | None:
    """Every async test runs on uvloop, the loop ``leadbot run`` and ``leadbot api`` serve on
    (``bot.cli.run_serving``); where uvloop does not build (Windows), on asyncio's own, as they do."""
    try:
        import uvloop
    except ImportError:
        return None
    return {"uvloop": uvloop.new_event_loop}
