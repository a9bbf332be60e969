"""``leadbot doctor``: a configuration checked end to end, and the checks ``leadbot run`` makes before it starts.

Each check says in plain words what works or what is wrong and what to do about it:

- the bot token: set, shaped like a token, and accepted by Telegram (``getMe``, against
  ``bot.api_server`` when it is set);
- the database: the URL and its driver, the server or file reachable, the schema migrated to the head
  revision this LeadBot knows (a SQLite file that does not exist is reported, never created);
- Redis, for every ``redis://`` URL the configuration holds (PING, after AUTH when the URL has a password);
- the HTTP API's ``host:port`` free to listen on.

Nothing here imports aiogram: the token is checked with a plain ``getMe`` over aiohttp, so a wrong token
is reported in a fraction of a second. No message ever contains the token or a password.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from bot.config import Settings

TELEGRAM_API = "https://api.telegram.org"
# Seconds to wait for an answer from the Bot API and from Redis.
TELEGRAM_WAIT = 15.0
REDIS_WAIT = 5.0
_WHERE_TO_PUT = "[bot] token in the config file, or LEADBOT_BOT__TOKEN"
NO_TOKEN = (
    "config error: bot.token: not set. Create a bot with @BotFather in Telegram (/newbot), then put its "
    'token into config.toml as [bot] token = "..." or set LEADBOT_BOT__TOKEN.'
)
MALFORMED_TOKEN = (
    "config error: bot.token: this is not a bot token (one looks like 123456789:AAH...). Copy it again "
    f"from @BotFather (/mybots → your bot → API Token) into {_WHERE_TO_PUT}."
)
REJECTED_TOKEN = (
    "config error: bot.token: Telegram does not accept this token (revoked, or mistyped). Get the current "
    f"one from @BotFather (/mybots → your bot → API Token) and put it into {_WHERE_TO_PUT}."
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One line for a person, and the exit code of a command that stops on it (2: fix the config)."""

    line: str
    exit_code: int = 2


@dataclass(frozen=True, slots=True)
class TokenCheck:
    username: str | None = None
    problem: Problem | None = None


# ---- the bot token -------------------------------------------------------------------------------------


def looks_like_token(token: str) -> bool:
    """The shape aiogram requires (``<digits>:<anything>``, no spaces), checked without importing it."""
    left, sep, right = token.partition(":")
    return bool(sep) and left.isascii() and left.isdigit() and bool(right) and not any(c.isspace() for c in token)


def token_problem(settings: Settings) -> Problem | None:
    """A missing or malformed token, found without the network."""
    token = settings.bot.token.get_secret_value() if settings.bot.token is not None else ""
    if not token.strip():
        return Problem(NO_TOKEN)
    if not looks_like_token(token):
        return Problem(MALFORMED_TOKEN)
    return None


async def verify_token(settings: Settings) -> TokenCheck:
    """Ask the Bot API who the token belongs to (``getMe``); a rejected token is a config problem."""
    import aiohttp

    assert settings.bot.token is not None
    token = settings.bot.token.get_secret_value()
    base = settings.bot.api_server or TELEGRAM_API
    where = "bot.api_server" if settings.bot.api_server else "your network"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TELEGRAM_WAIT)) as session,
            session.post(f"{base}/bot{token}/getMe") as response,
        ):
            status = response.status
            body: Any = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        reason = _without(str(exc) or type(exc).__name__, token)
        return TokenCheck(problem=Problem(f"cannot reach the Telegram Bot API at {base}: {reason}. Check {where}.", 1))
    if status == 401:
        return TokenCheck(problem=Problem(REJECTED_TOKEN))
    if not isinstance(body, dict) or body.get("ok") is not True or not isinstance(body.get("result"), dict):
        description = body.get("description") if isinstance(body, dict) else None
        answer = _without(f"HTTP {status}" + (f", {description}" if description else ""), token)
        return TokenCheck(problem=Problem(f"the Bot API at {base} did not answer getMe ({answer}). Check {where}.", 1))
    return TokenCheck(username=str(body["result"].get("username") or ""))


def _without(text: str, secret: str) -> str:
    return text.replace(secret, "<token>") if secret else text


# ---- the database --------------------------------------------------------------------------------------


def explain_database_error(exc: BaseException, url: str) -> Problem | None:
    """A database error a person caused (a wrong URL, a missing driver or folder) as one line, else None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchModuleError, SQLAlchemyError

    if isinstance(exc, NoSuchModuleError):
        return Problem(f"config error: database.url: unknown database driver. {_URL_EXAMPLE}")
    if isinstance(exc, ValueError) and str(exc).startswith("database.url: unsupported driver"):
        return Problem(f"config error: {exc}. {_URL_EXAMPLE}")
    if isinstance(exc, ArgumentError):
        return Problem(f"config error: database.url: not a database URL. {_URL_EXAMPLE}")
    if isinstance(exc, InvalidRequestError) and "async" in str(exc):
        return Problem(f"config error: database.url: the driver must be an asyncio one. {_URL_EXAMPLE}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        return Problem(f"config error: database.url: not a database URL. {_URL_EXAMPLE}")
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] == parsed.get_driver_name():
        return Problem(f"config error: database.url: its driver {exc.name} is not installed (pip install {exc.name}).")
    # Only what the database layer raised: an HTTP client's connection error is an OSError too.
    if not isinstance(exc, SQLAlchemyError | sqlite3.Error) and type(exc).__module__ != "builtins":
        return None
    for cause in _causes(exc):
        if isinstance(cause, sqlite3.OperationalError) and "unable to open database file" in str(cause):
            return Problem(
                f"config error: database.url: cannot open the SQLite file {parsed.database}: "
                "its folder does not exist or is not writable."
            )
        if isinstance(cause, OSError) and parsed.get_backend_name() != "sqlite":
            reason = cause.strerror or str(cause) or type(cause).__name__
            return Problem(
                f"cannot reach the database server at {parsed.host}:{parsed.port or 'default port'}: {reason}. "
                "Check database.url and that the server is running.",
                1,
            )
    return None


_URL_EXAMPLE = "Write it like sqlite+aiosqlite:///leadbot.db (the default; a relative path starts at the config file)."


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__, getattr(item, "orig", None)]


def missing_sqlite_folder(url: str) -> str | None:
    """The one line to print when ``url`` names a SQLite file in a folder that does not exist, else None.

    Checked before the database is opened, so the mistake is reported plainly and nothing is created.
    """
    path = sqlite_file(url)
    if path is None or path.parent.is_dir():
        return None
    return (
        f"config error: database.url: cannot open the SQLite file {path}: its folder does not exist or is not writable."
    )


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, or None (another database, in memory, or not a URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _current_revisions(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


async def check_database(settings: Settings) -> Check:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from db.engine import open_database
    from db.migrate import alembic_config

    url = settings.database.url
    try:
        parsed = make_url(url)
    except ArgumentError:
        return Check("database", False, f"database.url is not a database URL. {_URL_EXAMPLE}")
    path = sqlite_file(url)
    where = f"the SQLite file {path}" if path is not None else f"the database at {parsed.render_as_string()}"
    if path is not None and not path.is_file():
        return Check(
            "database",
            False,
            f"{where} does not exist yet. `leadbot run` creates it; if you expected an existing database, "
            "check database.url and the config file named above.",
        )
    try:
        database = open_database(url)
        try:
            async with database.read_engine.connect() as connection:
                current = await connection.run_sync(_current_revisions)
        finally:
            await database.dispose()
    except Exception as exc:
        problem = explain_database_error(exc, url)
        reason = (
            problem.line.removeprefix("config error: database.url: ") if problem else f"{type(exc).__name__}: {exc}"
        )
        return Check("database", False, f"cannot open {where}: {reason}")
    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    if current == heads:
        return Check(
            "database", True, f"{where} is reachable and its schema is up to date ({', '.join(sorted(heads))})."
        )
    if not current:
        return Check("database", False, f"{where} has no LeadBot schema yet: `leadbot run` creates it at start.")
    if current - known:
        return Check(
            "database",
            False,
            f"{where} is at revision {', '.join(sorted(current))}, which this LeadBot does not know: it was made by "
            "a newer version. Install that version again, or restore a backup made for this one.",
        )
    return Check(
        "database",
        False,
        f"{where} is at revision {', '.join(sorted(current))}, this LeadBot needs {', '.join(sorted(heads))}: "
        "`leadbot run` upgrades it at start (back it up first, see the README).",
    )


# ---- Redis ---------------------------------------------------------------------------------------------


def redis_urls(settings: BaseModel) -> list[tuple[str, str]]:
    """Every ``redis://``/``rediss://``/``unix://`` URL in the settings, with the key that holds it."""
    found: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, dict):
            for name, item in value.items():
                walk(item, f"{key}.{name}" if key else str(name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and value.startswith(("redis://", "rediss://", "unix://")):
            found.append((key, value))

    walk(settings.model_dump(), "")
    return found


async def check_redis(key: str, url: str) -> Check:
    parts = urlsplit(url)
    where = f"Redis at {parts.path}" if parts.scheme == "unix" else f"Redis at {parts.hostname}:{parts.port or 6379}"
    try:
        async with asyncio.timeout(REDIS_WAIT):
            if parts.scheme == "unix":
                reader, writer = await asyncio.open_unix_connection(parts.path)
            else:
                reader, writer = await asyncio.open_connection(
                    parts.hostname or "localhost", parts.port or 6379, ssl=True if parts.scheme == "rediss" else None
                )
            try:
                if parts.password:
                    user = [parts.username] if parts.username else []
                    answer = await _redis_call(reader, writer, "AUTH", *user, parts.password)
                    if not answer.startswith("+"):
                        return Check(key, False, f"{where} refused the password in {key}: {answer[1:]}")
                answer = await _redis_call(reader, writer, "PING")
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        return Check(key, False, f"cannot reach {where} ({key}): {exc.strerror or type(exc).__name__}.")
    if answer == "+PONG":
        return Check(key, True, f"{where} answers.")
    if answer.startswith("-NOAUTH"):
        return Check(key, False, f"{where} needs a password: put it into {key} (redis://:password@host:port).")
    return Check(key, False, f"{where} did not answer PING: {answer[1:] or 'nothing'}.")


async def _redis_call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *words: str) -> str:
    encoded = [word.encode() for word in words]
    writer.write(f"*{len(encoded)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded))
    await writer.drain()
    return (await reader.readline()).decode("utf-8", "replace").strip()


# ---- the HTTP API's port -------------------------------------------------------------------------------


def check_api_port(settings: Settings) -> Check:
    host, port = settings.api.host, settings.api.port
    where = f"{host}:{port}"
    note = "" if settings.api.enabled else " (for `leadbot api`; `leadbot run` serves it with api.enabled = true)"
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except socket.gaierror:
        return Check("api", False, f"api.host {host!r} is not a name or address this machine can listen on.")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "is already in use by another program (or by LeadBot, if it is running): stop it, or set api.port"
        elif exc.errno == errno.EACCES:
            reason = "needs administrator rights (ports below 1024): set api.port to 1024 or above"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = "is not an address of this machine: set api.host (127.0.0.1, or 0.0.0.0 for every address)"
        else:
            reason = f"cannot be listened on: {exc.strerror}"
        return Check("api", False, f"{where} {reason}{note}.")
    return Check("api", True, f"{where} is free{note}.")


# ---- the report ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    text: str


async def check_bot(settings: Settings) -> Check:
    problem = token_problem(settings)
    if problem is None:
        result = await verify_token(settings)
        if result.problem is None:
            return Check("bot.token", True, f"Telegram accepts it: the bot is @{result.username}.")
        problem = result.problem
    return Check("bot.token", False, problem.line.removeprefix("config error: bot.token: "))


async def run_checks(settings: Settings, *, out: TextIO) -> int:
    """Print one line per check; 0 when everything is in order, 1 otherwise."""
    checks = await asyncio.gather(
        check_bot(settings),
        check_database(settings),
        *(check_redis(key, url) for key, url in redis_urls(settings)),
    )
    checks.append(check_api_port(settings))
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.text}", file=out)
    failed = sum(not check.ok for check in checks)
    if failed:
        plural = "s" if failed > 1 else ""
        print(f"{failed} problem{plural}: fix the lines marked FAIL, then run `leadbot doctor` again.", file=out)
        return 1
    print("All good.", file=out)
    return 0
