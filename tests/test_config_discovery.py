"""Which config file a command uses: ``--config``, then ``$LEADBOT_CONFIG``, then ``./config.toml``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.config import ConfigError, find_config, load_settings, sqlite_url_relative_to


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("LEADBOT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def here(tmp_path: Path) -> Path:
    folder = tmp_path / "here"
    folder.mkdir()
    return folder


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    return path


def test_the_explicit_path_comes_first(tmp_path: Path, here: Path) -> None:
    explicit = touch(tmp_path / "explicit.toml")
    from_env = touch(tmp_path / "env.toml")
    touch(here / "config.toml")

    source = find_config(str(explicit), environ={"LEADBOT_CONFIG": str(from_env)}, cwd=here)

    assert (source.path, source.origin) == (explicit.resolve(), "--config")
    assert source.describe() == f"config: {explicit.resolve()} (from --config)"


def test_then_the_environment_variable(tmp_path: Path, here: Path) -> None:
    from_env = touch(tmp_path / "env.toml")
    touch(here / "config.toml")

    source = find_config(None, environ={"LEADBOT_CONFIG": str(from_env)}, cwd=here)

    assert (source.path, source.origin) == (from_env.resolve(), "LEADBOT_CONFIG")


def test_then_config_toml_in_the_current_directory(here: Path) -> None:
    implicit = touch(here / "config.toml")

    source = find_config(None, environ={"LEADBOT_CONFIG": "  "}, cwd=here)  # blank counts as unset

    assert (source.path, source.origin) == (implicit.resolve(), "the current directory")


def test_none_found_says_where_it_looked(here: Path) -> None:
    source = find_config(None, environ={}, cwd=here)

    assert source.path is None
    assert source.describe() == (
        f"config: none (no --config, LEADBOT_CONFIG not set, no config.toml in {here}); "
        "using defaults and LEADBOT_* environment variables"
    )


def test_a_relative_path_is_read_from_the_current_directory(here: Path) -> None:
    config = touch(here / "conf" / "bot.toml")

    assert find_config("conf/bot.toml", environ={}, cwd=here).path == config.resolve()
    assert find_config(None, environ={"LEADBOT_CONFIG": "conf/bot.toml"}, cwd=here).path == config.resolve()


@pytest.mark.parametrize(
    ("explicit", "environ", "line"),
    [
        ("missing.toml", {}, "config file not found: missing.toml (given by --config)"),
        (None, {"LEADBOT_CONFIG": "gone.toml"}, "config file not found: gone.toml (given by LEADBOT_CONFIG)"),
        # A named file that is missing is an error even when ./config.toml exists: no silent fallback.
        (None, {"LEADBOT_CONFIG": "conf"}, "config file not found: conf (given by LEADBOT_CONFIG)"),
    ],
)
def test_a_named_file_must_exist(here: Path, explicit: str | None, environ: dict[str, str], line: str) -> None:
    touch(here / "config.toml")
    (here / "conf").mkdir()  # a folder is not a config file
    with pytest.raises(ConfigError) as error:
        find_config(explicit, environ=environ, cwd=here)
    assert str(error.value) == line


def test_a_relative_sqlite_path_starts_at_the_config_file(tmp_path: Path, here: Path) -> None:
    config = tmp_path / "srv" / "config.toml"
    config.parent.mkdir()
    config.write_text('[database]\nurl = "sqlite+aiosqlite:///data/leadbot.db?timeout=5"\n', encoding="utf-8")

    settings = load_settings(config)

    assert settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/srv/data/leadbot.db?timeout=5"


def test_the_default_database_sits_beside_the_config_file(tmp_path: Path) -> None:
    config = touch(tmp_path / "srv" / "config.toml")

    assert load_settings(config).database.url == f"sqlite+aiosqlite:///{tmp_path}/srv/leadbot.db"


def test_without_a_file_a_relative_path_stays_relative() -> None:
    assert load_settings(None).database.url == "sqlite+aiosqlite:///leadbot.db"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////var/lib/leadbot/leadbot.db",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite://",
        "postgresql+asyncpg://leadbot:secret@db.example/leadbot",
        "not a url",
    ],
)
def test_other_urls_are_left_alone(tmp_path: Path, url: str) -> None:
    assert sqlite_url_relative_to(url, tmp_path) == url
