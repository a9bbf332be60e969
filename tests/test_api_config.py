"""The ``[api]`` section: the example file names every key, and bad values stop the start with one line."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from bot.config import ApiSection, ConfigError, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LEADBOT_* variable from the developer's machine may leak in."""
    for name in list(os.environ):
        if name.upper().startswith("LEADBOT_"):
            monkeypatch.delenv(name)


def test_the_example_config_sets_every_api_key() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    documented = set(example["api"]) | {"webhook_secrets"}  # that one is a commented-out table
    assert documented == set(ApiSection.model_fields)
    assert ApiSection.model_validate(example["api"]) == ApiSection()  # the example shows the defaults


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('cors_origins = ["https://crm.example.com/"]', "api.cors_origins.0"),
        ('cors_origins = ["crm.example.com"]', "api.cors_origins.0"),
        ('trusted_proxies = ["nginx"]', "api.trusted_proxies.0"),
        ("max_body_bytes = 0", "api.max_body_bytes"),
        ('body_timeout = "0s"', "api.body_timeout"),
        ("auth_failures = 0", "api.auth_failures"),
    ],
)
def test_bad_api_values_stop_the_start_naming_the_key(toml: str, key: str, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[api]\n{toml}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as error:
        load_settings(config, required=True)

    (line,) = str(error.value).splitlines()
    assert line.startswith(f"config error: {key}: ")


def test_good_api_values(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[api]\ncors_origins = ["https://crm.example.com", "http://localhost:5173"]\n'
        'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]\n'
        '[api.webhook_secrets]\n"Сайт" = "0123456789abcdef"\n',
        encoding="utf-8",
    )
    api = load_settings(config, required=True).api
    assert api.cors_origins == ["https://crm.example.com", "http://localhost:5173"]
    assert api.trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]
    assert api.webhook_secrets["Сайт"].get_secret_value() == "0123456789abcdef"
