"""``leadbot doctor``'s checks one by one: the database's revision, Redis, the API port, database errors."""

from __future__ import annotations

import asyncio
import io
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from pydantic import BaseModel, SecretStr
from sqlalchemy.exc import OperationalError

from bot.config import Settings
from bot.doctor import (
    check_api_port,
    check_database,
    check_redis,
    explain_database_error,
    looks_like_token,
    redis_urls,
    run_checks,
)
from db.migrate import alembic_config
from tests.fake_bot_api import FakeBotAPI

# The newest migration: what a database migrated by the fixtures is at.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def with_url(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"database": settings.database.model_copy(update={"url": url})})


# ---- the database -------------------------------------------------------------------------------------------


async def test_a_migrated_database_is_up_to_date(settings: Settings) -> None:
    check = await check_database(settings)
    assert check.ok and check.text.endswith(f"is reachable and its schema is up to date ({HEAD}).")


async def test_a_database_behind_the_code_is_upgraded_by_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ScriptDirectory, "get_heads", lambda _self: ["9999"])
    check = await check_database(settings)
    assert not check.ok
    assert check.text.endswith(
        f"is at revision {HEAD}, this LeadBot needs 9999: `leadbot run` upgrades it at start "
        "(back it up first, see the README)."
    )


@pytest.mark.sqlite_only
async def test_a_database_from_a_newer_version(settings: Settings, db_url: str) -> None:
    with sqlite3.connect(db_url.removeprefix("sqlite+aiosqlite:///")) as db:
        db.execute("UPDATE alembic_version SET version_num = '0999'")
    check = await check_database(settings)
    assert not check.ok and "is at revision 0999, which this LeadBot does not know" in check.text


async def test_an_empty_database_has_no_schema_yet(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    check = await check_database(with_url(settings, f"sqlite+aiosqlite:///{empty}"))
    assert not check.ok and check.text.endswith("has no LeadBot schema yet: `leadbot run` creates it at start.")


async def test_a_file_that_is_not_a_database(settings: Settings, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    check = await check_database(with_url(settings, f"sqlite+aiosqlite:///{junk}"))
    assert not check.ok and check.text.startswith(f"cannot open the SQLite file {junk}: ")


async def test_a_postgresql_server_that_is_not_running(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    url = f"postgresql+asyncpg://leadbot:s3cret@127.0.0.1:{closed}/leadbot"
    check = await check_database(with_url(settings, url))
    assert not check.ok and "s3cret" not in check.text
    assert check.text.startswith(
        f"cannot open the database at postgresql+asyncpg://leadbot:***@127.0.0.1:{closed}/leadbot: "
    )
    assert f"cannot reach the database server at 127.0.0.1:{closed}: " in check.text


def test_an_unreachable_database_server_is_named_without_its_password() -> None:
    refused = OperationalError("connect", {}, ConnectionRefusedError(111, "Connection refused"))
    problem = explain_database_error(refused, "postgresql+asyncpg://leadbot:s3cret@db.internal:5432/leadbot")
    assert problem is not None and problem.exit_code == 1
    assert problem.line == (
        "cannot reach the database server at db.internal:5432: Connection refused. "
        "Check database.url and that the server is running."
    )


class HttpClientError(OSError):
    """Like aiohttp's connection errors: an OSError that has nothing to do with the database."""


def test_an_error_that_is_not_a_mistake_is_left_alone() -> None:
    assert explain_database_error(RuntimeError("a bug"), "sqlite+aiosqlite:///leadbot.db") is None
    assert explain_database_error(ModuleNotFoundError(name="requests"), "sqlite+aiosqlite:///x.db") is None
    telegram_down = HttpClientError(111, "Connection refused")
    assert explain_database_error(telegram_down, "postgresql+asyncpg://leadbot@db.internal/leadbot") is None


def test_a_refused_connection_straight_from_the_driver() -> None:
    problem = explain_database_error(
        ConnectionRefusedError(111, "Connection refused"), "postgresql+asyncpg://db:5433/x"
    )
    assert problem is not None and problem.line.startswith("cannot reach the database server at db:5433: ")


# ---- the token's shape ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        ("123456789:AAHk-some_Thing", True),
        ("42:TEST-TOKEN", True),
        ("123456789", False),
        (":abc", False),
        ("12a:abc", False),
        ("١٢٣:abc", False),  # Arabic-Indic digits pass str.isdigit(), not Telegram
        ("123:abc def", False),
        ("123:abc\n", False),
        ("123:", False),
    ],
)
def test_the_shape_of_a_token(token: str, ok: bool) -> None:
    assert looks_like_token(token) is ok


# ---- Redis ----------------------------------------------------------------------------------------------------

StartRedis = Callable[[str | None], Awaitable[int]]


@pytest.fixture
async def fake_redis() -> AsyncIterator[StartRedis]:
    """A Redis stand-in on 127.0.0.1 that knows AUTH and PING; started with the password it requires."""
    servers: list[asyncio.Server] = []

    async def start(password: str | None) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            authenticated = password is None
            while header := await reader.readline():
                words = []
                for _ in range(int(header[1:])):
                    await reader.readline()  # $<length>
                    words.append((await reader.readline()).rstrip(b"\r\n").decode())
                if words[0] == "AUTH":
                    authenticated = words[-1] == password
                    writer.write(b"+OK\r\n" if authenticated else b"-WRONGPASS invalid password\r\n")
                else:
                    writer.write(b"+PONG\r\n" if authenticated else b"-NOAUTH Authentication required.\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_redis_answers(fake_redis: StartRedis) -> None:
    port = await fake_redis(None)
    check = await check_redis("cache.redis_url", f"redis://127.0.0.1:{port}/0")
    assert check.ok and check.text == f"Redis at 127.0.0.1:{port} answers."


async def test_redis_with_a_password(fake_redis: StartRedis) -> None:
    port = await fake_redis("s3cret")
    assert (await check_redis("k", f"redis://:s3cret@127.0.0.1:{port}")).ok
    assert (await check_redis("k", f"redis://default:s3cret@127.0.0.1:{port}")).ok

    wrong = await check_redis("k", f"redis://:guess@127.0.0.1:{port}")
    assert (
        not wrong.ok
        and wrong.text == f"Redis at 127.0.0.1:{port} refused the password in k: WRONGPASS invalid password"
    )
    missing = await check_redis("k", f"redis://127.0.0.1:{port}")
    assert not missing.ok and "needs a password: put it into k" in missing.text
    assert all("s3cret" not in check.text and "guess" not in check.text for check in (wrong, missing))


async def test_redis_not_running() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = await check_redis("k", f"redis://127.0.0.1:{port}")
    assert not check.ok and check.text.startswith(f"cannot reach Redis at 127.0.0.1:{port} (k): ")


def test_redis_urls_are_found_under_any_key() -> None:
    class Cache(BaseModel):
        url: SecretStr
        hosts: list[str]

    class Config(BaseModel):
        cache: Cache
        other: str = "https://example.org"

    config = Config(cache=Cache(url=SecretStr("redis://:pw@10.0.0.5:6380/1"), hosts=["rediss://r2:6379"]))
    assert redis_urls(config) == [("cache.url", "redis://:pw@10.0.0.5:6380/1"), ("cache.hosts", "rediss://r2:6379")]


def test_todays_settings_name_no_redis(settings: Settings) -> None:
    assert redis_urls(settings) == []


# ---- the API port ---------------------------------------------------------------------------------------------


def test_the_api_port(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        api = settings.api.model_copy(update={"port": port, "enabled": True})
        check = check_api_port(settings.model_copy(update={"api": api}))
        assert not check.ok and check.text.startswith(f"127.0.0.1:{port} is already in use")
    check = check_api_port(settings.model_copy(update={"api": api}))
    assert check.ok and check.text == f"127.0.0.1:{port} is free."


def test_an_api_host_that_is_not_this_machine(settings: Settings) -> None:
    api = settings.api.model_copy(update={"host": "192.0.2.1", "port": 18080})  # TEST-NET-1: never local
    check = check_api_port(settings.model_copy(update={"api": api}))
    assert not check.ok and check.text.startswith("192.0.2.1:18080 is not an address of this machine")


# ---- the report -----------------------------------------------------------------------------------------------


async def test_the_report_in_process(settings: Settings, fake_bot_api: FakeBotAPI) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bot = settings.bot.model_copy(update={"api_server": fake_bot_api.base_url})
    api = settings.api.model_copy(update={"port": port})
    out = io.StringIO()
    assert await run_checks(settings.model_copy(update={"bot": bot, "api": api}), out=out) == 0
    assert out.getvalue().splitlines()[-1] == "All good."
