"""Settings from a TOML file and the environment, and the ``leadbot`` command line's first words."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ConfigError, load_settings

SECRET = "123456:SUPER-SECRET-TOKEN-VALUE"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LEADBOT_* variable and no config.toml from the developer's machine may leak in."""
    for name in list(os.environ):
        if name.upper().startswith("LEADBOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_line(error: pytest.ExceptionInfo[ConfigError]) -> str:
    lines = str(error.value).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "leadbot.toml",
        f"""
[bot]
token = "{SECRET}"
default_language = "en"

[access]
admins = [11, 22]
invite_ttl = "2h"

[crm]
page_size = 20
timezone = "Europe/Moscow"
""",
    )
    settings = load_settings(path, required=True)
    assert settings.bot.token is not None and settings.bot.token.get_secret_value() == SECRET
    assert settings.bot.default_language == "en"
    assert settings.access.admins == [11, 22]
    assert settings.access.invite_ttl == timedelta(hours=2)
    assert (settings.crm.page_size, settings.crm.timezone) == (20, "Europe/Moscow")
    assert SECRET not in repr(settings)


def test_environment_wins_over_the_file_with_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "config.toml", '[bot]\ntoken = "1:FROM-FILE"\n\n[crm]\npage_size = 20\ncurrency = "EUR"\n')
    monkeypatch.setenv("LEADBOT_BOT__TOKEN", "2:FROM-ENV")
    monkeypatch.setenv("LEADBOT_CRM__PAGE_SIZE", "30")
    monkeypatch.setenv("LEADBOT_ACCESS__ADMINS", "[5, 6]")
    monkeypatch.setenv("LEADBOT_REMINDERS__TICK", "90s")
    settings = load_settings(path)
    assert settings.bot.token is not None and settings.bot.token.get_secret_value() == "2:FROM-ENV"
    assert settings.crm.page_size == 30
    assert settings.crm.currency == "EUR"  # not overridden: the file's value stays
    assert settings.access.admins == [5, 6]
    assert settings.reminders.tick == timedelta(seconds=90)


def test_defaults_without_a_file() -> None:
    settings = load_settings("config.toml")  # the default name, absent in this directory
    assert settings.bot.token is None
    assert settings.crm.page_size == 10 and settings.access.invite_ttl == timedelta(hours=48)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[crm]\ncolour = 'red'\n", "crm.colour"),
        ("[bogus]\nx = 1\n", "bogus"),
        ("[bot]\ntokn = 'x'\n", "bot.tokn"),
    ],
)
def test_an_unknown_key_is_named_on_one_line(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path / "config.toml", f"[access]\nadmins = [1]\n\n{toml}")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert one_line(error) == f"config error: {key}: unknown key"


def test_an_unknown_environment_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADBOT_CRM__COLOUR", "red")
    with pytest.raises(ConfigError) as error:
        load_settings(None)
    assert one_line(error).startswith("config error: crm.colour:")


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[crm]\npage_size = 0\n", "crm.page_size"),
        ("[crm]\ntimezone = 'Mars/Olympus'\n", "crm.timezone"),
        ("[access]\ninvite_ttl = 'forever'\n", "access.invite_ttl"),
        ("[bot]\napi_server = 'ftp://example'\n", "bot.api_server"),
        (f"[bot]\ntoken = ['{SECRET}']\n", "bot.token"),
    ],
)
def test_a_bad_value_is_named_on_one_line_without_the_token(tmp_path: Path, toml: str, key: str) -> None:
    path = write(tmp_path / "config.toml", toml)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    line = one_line(error)
    assert line.startswith(f"config error: {key}: ")
    assert "SUPER-SECRET" not in line


def test_a_bad_environment_value_never_shows_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADBOT_BOT__TOKEN", SECRET)
    monkeypatch.setenv("LEADBOT_CRM__PAGE_SIZE", "many")
    with pytest.raises(ConfigError) as error:
        load_settings(None)
    line = one_line(error)
    assert line.startswith("config error: crm.page_size: ") and "SUPER-SECRET" not in line


def test_a_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[bot\ntoken = 1\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert "config.toml" in one_line(error)


# ---- the command line --------------------------------------------------------------------------------


def test_run_without_a_token_points_to_botfather(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "@BotFather" in err and "LEADBOT_BOT__TOKEN" in err
    assert "Traceback" not in err


def test_run_with_a_blank_token_in_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "custom.toml", '[bot]\ntoken = "  "\n')
    assert main(["run", "--config", str(path)]) == 2
    assert "@BotFather" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["separate", "joined"])
def test_a_missing_explicit_config_file_is_an_error(capsys: pytest.CaptureFixture[str], form: str) -> None:
    argv = ["run", "--config", "missing.toml"] if form == "separate" else ["run", "--config=missing.toml"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == "config file not found: missing.toml (given by --config)"


def test_a_config_error_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEADBOT_BOT__TOKEN", SECRET)
    write(tmp_path / "config.toml", "[crm]\npage_size = 500\n")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    # The file the command uses, then the problem: one line each.
    used, problem = err.strip().splitlines()
    assert used == f"config: {(tmp_path / 'config.toml').resolve()} (from the current directory)"
    assert problem.startswith("config error: crm.page_size:")
    assert "SUPER-SECRET" not in err and "Traceback" not in err
