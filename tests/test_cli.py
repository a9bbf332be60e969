"""The installed ``leadbot`` command as a person meets it: which config it used, and every mistake one line.

These tests run the command pip installed beside this interpreter (``.venv/bin/leadbot``) in a
subprocess, from a scratch directory with no ``LEADBOT_*`` variable; Telegram is the fake Bot API server
on 127.0.0.1 (``bot.api_server`` points at it), so a wrong token meets a real 401.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from db.migrate import alembic_config
from db.repositories.tokens import hash_token
from tests.conftest import ADMIN_TG
from tests.fake_bot_api import FakeBotAPI
from tests.fakes import BOT_TOKEN, BOT_USERNAME

_BESIDE = Path(sys.executable).parent / "leadbot"
LEADBOT = str(_BESIDE) if _BESIDE.exists() else shutil.which("leadbot")
pytestmark = pytest.mark.skipif(LEADBOT is None, reason="the leadbot command is not installed (pip install -e .)")

# The newest migration: what a freshly migrated database is at.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.err.strip().splitlines()

    @property
    def problem(self) -> str:
        """The one line after the line naming the config file; fails unless stderr is exactly those two."""
        assert "Traceback" not in self.err, self.err
        assert len(self.lines) == 2, self.err
        assert self.lines[0].startswith("config: "), self.err
        return self.lines[1]


def environment(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith("LEADBOT_")}
    return env | extra


async def leadbot(*args: str, cwd: Path, **env: str) -> Result:
    """Run the installed command without blocking the loop (the fake Bot API answers on it meanwhile)."""
    assert LEADBOT is not None
    process = await asyncio.create_subprocess_exec(
        LEADBOT,
        *args,
        cwd=cwd,
        env=environment(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the config file ------------------------------------------------------------------------------------


async def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = await leadbot("--help", cwd=tmp_path)
    assert result.code == 0 and result.err == ""
    for name in ("run", "doctor", "api", "token"):
        assert name in result.out
    assert "LEADBOT_CONFIG" in result.out


async def test_without_a_config_file_the_command_says_so(tmp_path: Path) -> None:
    result = await leadbot("run", cwd=tmp_path)
    assert result.code == 2
    assert result.lines[0] == (
        f"config: none (no --config, LEADBOT_CONFIG not set, no config.toml in {tmp_path}); "
        "using defaults and LEADBOT_* environment variables"
    )
    assert result.problem.startswith("config error: bot.token: not set.") and "@BotFather" in result.problem


@pytest.mark.parametrize("how", ["--config", "LEADBOT_CONFIG"])
async def test_a_named_config_file_is_used_from_anywhere(tmp_path: Path, how: str) -> None:
    config = write_config(tmp_path / "srv" / "leadbot.toml", '[bot]\ntoken = "oops"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if how == "--config":
        result = await leadbot("run", "--config", str(config), cwd=elsewhere)
    else:
        result = await leadbot("run", cwd=elsewhere, LEADBOT_CONFIG=str(config))
    assert result.lines[0] == f"config: {config} (from {how})"
    assert result.code == 2 and result.problem.startswith("config error: bot.token: ")


async def test_config_toml_in_the_current_directory_is_found(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", '[bot]\ntoken = "oops"\n')
    result = await leadbot("run", cwd=tmp_path)
    assert result.lines[0] == f"config: {tmp_path / 'config.toml'} (from the current directory)"


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (("run", "--config", "missing.toml"), {}, "config file not found: missing.toml (given by --config)"),
        (("doctor",), {"LEADBOT_CONFIG": "gone.toml"}, "config file not found: gone.toml (given by LEADBOT_CONFIG)"),
    ],
)
async def test_a_missing_config_file_is_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], line: str
) -> None:
    result = await leadbot(*args, cwd=tmp_path, **env)
    assert (result.code, result.err.strip()) == (2, line)


async def test_a_config_mistake_is_one_line(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", "[crm]\npage_size = 500\n")
    result = await leadbot("token", "issue", "5", cwd=tmp_path)
    assert result.code == 2 and result.problem.startswith("config error: crm.page_size: ")
    assert not (tmp_path / "leadbot.db").exists()


async def test_a_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", "[bot\ntoken = 1\n")
    result = await leadbot("doctor", cwd=tmp_path)
    assert result.code == 2 and "config.toml" in result.problem


# ---- the token --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["not-a-token", "123456:has space", "abc:def", "123456:"])
async def test_a_malformed_token_is_one_line_before_anything_is_created(tmp_path: Path, token: str) -> None:
    result = await leadbot("run", cwd=tmp_path, LEADBOT_BOT__TOKEN=token)
    assert result.code == 2
    assert result.problem.startswith("config error: bot.token: this is not a bot token") and "@BotFather" in result.err
    assert token not in result.err
    assert listing(tmp_path) == []


async def test_a_wrong_token_is_one_line_before_anything_is_created(tmp_path: Path, fake_bot_api: FakeBotAPI) -> None:
    wrong = "42:REVOKED-TOKEN-VALUE"
    write_config(tmp_path / "config.toml", f'[bot]\ntoken = "{wrong}"\napi_server = "{fake_bot_api.base_url}"\n')

    result = await leadbot("run", cwd=tmp_path)

    assert result.code == 2
    assert result.problem.startswith("config error: bot.token: Telegram does not accept this token")
    assert "REVOKED" not in result.err
    assert [call.method for call in fake_bot_api.calls()] == ["getMe"]
    assert listing(tmp_path) == ["config.toml"]  # no database


async def test_an_unreachable_bot_api_is_one_line(tmp_path: Path) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    result = await leadbot("run", cwd=tmp_path, LEADBOT_BOT__TOKEN=BOT_TOKEN, LEADBOT_BOT__API_SERVER=server)
    assert result.code == 1
    assert result.problem.startswith(f"cannot reach the Telegram Bot API at {server}: ")
    assert result.problem.endswith("Check bot.api_server.")
    assert BOT_TOKEN not in result.err


# ---- the database -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "start"),
    [
        ("nonsense", "config error: database.url: not a database URL."),
        ("sqlite:///leadbot.db", "config error: database.url: unsupported driver 'sqlite'"),
        ("nosuchdb+nodriver://host/db", "config error: database.url: unsupported driver 'nosuchdb+nodriver'"),
        ("sqlite+aiosqlite:///no/such/folder/leadbot.db", "config error: database.url: cannot open the SQLite file"),
    ],
)
async def test_a_bad_database_url_is_one_line(tmp_path: Path, url: str, start: str) -> None:
    write_config(tmp_path / "config.toml", f'[database]\nurl = "{url}"\n\n[access]\nadmins = [5]\n')
    result = await leadbot("token", "issue", "5", cwd=tmp_path)
    assert result.code == 2 and result.problem.startswith(start), result.err
    assert listing(tmp_path) == ["config.toml"]


# ---- token issue --------------------------------------------------------------------------------------------


async def test_token_issue_for_an_admin_who_never_wrote_to_the_bot(tmp_path: Path) -> None:
    write_config(tmp_path / "srv" / "config.toml", f"[access]\nadmins = [{ADMIN_TG}]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = await leadbot("token", "issue", str(ADMIN_TG), cwd=elsewhere, LEADBOT_CONFIG="../srv/config.toml")

    assert result.code == 0, result.err
    assert result.lines == [f"config: {tmp_path / 'srv' / 'config.toml'} (from LEADBOT_CONFIG)"]
    token = result.out.strip()
    assert token.startswith("lb_")
    # The database is the one beside the config file, not a new one where the command ran.
    assert listing(elsewhere) == []
    with sqlite3.connect(tmp_path / "srv" / "leadbot.db") as db:
        users = db.execute("SELECT id, telegram_id, role, is_active FROM users").fetchall()
        tokens = db.execute("SELECT user_id, token_hash FROM api_tokens").fetchall()
    assert [row[1:] for row in users] == [(ADMIN_TG, "admin", 1)]
    assert tokens == [(users[0][0], hash_token(token))]


async def test_token_issue_for_a_stranger_creates_no_database(tmp_path: Path) -> None:
    result = await leadbot("token", "issue", "424242", cwd=tmp_path)
    assert result.code == 1 and result.out == ""
    assert result.problem == "error: no team member has Telegram id 424242: the database leadbot.db does not exist yet"
    assert listing(tmp_path) == []


# ---- doctor -------------------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_doctor_all_good(tmp_path: Path, fake_bot_api: FakeBotAPI, db_url: str) -> None:
    port = free_port()
    write_config(
        tmp_path / "config.toml",
        f'[bot]\ntoken = "{BOT_TOKEN}"\napi_server = "{fake_bot_api.base_url}"\n\n'
        f'[database]\nurl = "{db_url}"\n\n[api]\nport = {port}\n',
    )

    result = await leadbot("doctor", cwd=tmp_path)

    assert result.code == 0, result.out + result.err
    assert result.lines == [f"config: {tmp_path / 'config.toml'} (from the current directory)"]
    assert result.out.splitlines() == [
        f"ok    bot.token: Telegram accepts it: the bot is @{BOT_USERNAME}.",
        f"ok    database: the SQLite file {tmp_path / 'leadbot.db'} is reachable and its schema is up to date "
        f"({HEAD}).",
        f"ok    api: 127.0.0.1:{port} is free (for `leadbot api`; `leadbot run` serves it with api.enabled = true).",
        "All good.",
    ]


async def test_doctor_names_every_problem(tmp_path: Path, fake_bot_api: FakeBotAPI) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        write_config(
            tmp_path / "config.toml",
            f'[bot]\ntoken = "42:WRONG"\napi_server = "{fake_bot_api.base_url}"\n\n'
            f"[api]\nenabled = true\nport = {port}\n",
        )

        result = await leadbot("doctor", cwd=tmp_path)

    assert result.code == 1 and "Traceback" not in result.err
    assert result.out.splitlines() == [
        "FAIL  bot.token: Telegram does not accept this token (revoked, or mistyped). Get the current one from "
        "@BotFather (/mybots → your bot → API Token) and put it into [bot] token in the config file, or "
        "LEADBOT_BOT__TOKEN.",
        f"FAIL  database: the SQLite file {tmp_path / 'leadbot.db'} does not exist yet. `leadbot run` creates it; "
        "if you expected an existing database, check database.url and the config file named above.",
        f"FAIL  api: 127.0.0.1:{port} is already in use by another program (or by LeadBot, if it is running): "
        "stop it, or set api.port.",
        "3 problems: fix the lines marked FAIL, then run `leadbot doctor` again.",
    ]
    assert listing(tmp_path) == ["config.toml"]  # the doctor creates nothing


# ---- what the quick commands import --------------------------------------------------------------------------

_IMPORTS = """
import sys
from bot.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"aiogram", "fastapi", "uvicorn", "handlers"})
print("imported: " + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["token", "issue", "424242"], ["run"], ["doctor"], ["sync", "amocrm"]],
    ids=["help", "token-issue", "run-without-token", "doctor", "sync-not-configured"],
)
def test_quick_commands_do_not_import_aiogram(tmp_path: Path, args: list[str]) -> None:
    env = environment(LEADBOT_BOT__API_SERVER=f"http://127.0.0.1:{free_port()}", LEADBOT_API__PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == "imported: ", result.stderr


def test_leadbot_api_imports_neither_aiogram_nor_the_bot(tmp_path: Path) -> None:
    # The whole way to serving: settings, migrations, the app with every route; the port is taken, so the
    # server stops right there and the script can list what was imported.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = environment(LEADBOT_API__PORT=str(busy.getsockname()[1]))
        result = subprocess.run(
            [sys.executable, "-c", _IMPORTS, "api"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    assert "Traceback" not in result.stderr, result.stderr
    assert "address already in use" in result.stderr, result.stderr  # it got as far as binding
    assert result.stderr.splitlines()[-1] == "imported: fastapi,uvicorn", result.stderr


async def test_copy_db_names_an_unsupported_target_in_one_line(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", "[access]\nadmins = [5]\n")
    result = await leadbot("copy-db", "mysql://root@127.0.0.1/leadbot", cwd=tmp_path)
    assert result.code == 2 and result.problem.startswith("error: target: database.url: unsupported driver"), result.err
    assert listing(tmp_path) == ["config.toml"]


async def test_copy_db_copies_into_an_empty_sqlite_file(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", "[access]\nadmins = [5]\n")
    assert (await leadbot("token", "issue", "5", cwd=tmp_path)).code == 0  # makes the database, with admin 5
    result = await leadbot("copy-db", f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}", cwd=tmp_path)
    assert result.code == 0, result.err
    assert "users: 1" in result.out.splitlines() and "api_tokens: 1" in result.out.splitlines()


async def test_migrate_brings_the_schema_to_its_head_and_exits(tmp_path: Path) -> None:
    # What a deployment runs once before its instances start (docker-compose.yml's "migrate" service).
    write_config(tmp_path / "config.toml", '[database]\nurl = "sqlite+aiosqlite:///leadbot.db"\n')
    result = await leadbot("migrate", cwd=tmp_path)
    assert result.code == 0, result.err
    with sqlite3.connect(tmp_path / "leadbot.db") as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    again = await leadbot("migrate", cwd=tmp_path)
    assert again.code == 0, again.err
