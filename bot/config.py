"""Settings: a TOML file validated by pydantic, every key overridable from the environment.

``LEADBOT_BOT__TOKEN=...`` overrides ``[bot] token``; the environment wins over the file.
"""

from __future__ import annotations

import ipaddress
import re
from contextvars import ContextVar
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.durations import ClockRange, Duration

DEFAULT_SOURCES = ["Instagram", "Facebook", "Google Ads", "Рекомендация", "Холодный звонок", "Сайт"]

_toml_path: ContextVar[Path | None] = ContextVar("leadbot_toml_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BotSection(_Section):
    token: SecretStr | None = None
    # Base URL of a self-hosted Bot API server (e.g. http://127.0.0.1:8081); Telegram's own when empty.
    api_server: str | None = None
    default_language: str = "ru"

    @field_validator("api_server")
    @classmethod
    def _strip_api_server(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("default_language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        if value not in ("ru", "en"):
            raise ValueError("must be 'ru' or 'en'")
        return value


class DatabaseSection(_Section):
    url: str = "sqlite+aiosqlite:///leadbot.db"
    echo: bool = False


class AccessSection(_Section):
    admins: list[int] = Field(default_factory=list)
    invite_ttl: Duration = timedelta(hours=48)


class CrmSection(_Section):
    sources: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES))
    timezone: str = "Asia/Tashkent"
    phone_region: str = "UZ"
    currency: str = "USD"
    page_size: int = Field(default=10, ge=1, le=50)

    @field_validator("sources")
    @classmethod
    def _sources_not_empty(cls, value: list[str]) -> list[str]:
        cleaned = [s.strip() for s in value if s.strip()]
        if not cleaned:
            raise ValueError("at least one source is required")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("sources must be unique")
        return cleaned

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {value!r}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class NotificationsSection(_Section):
    team_chat_id: int | None = None
    team_thread_id: int | None = None
    rate_per_second: float = Field(default=25.0, gt=0, le=30)
    per_chat_interval: Duration = timedelta(seconds=1)
    group_per_minute: int = Field(default=20, ge=1)
    max_attempts: int = Field(default=8, ge=1)
    poll_interval: Duration = timedelta(seconds=1)


class RemindersSection(_Section):
    tick: Duration = timedelta(minutes=1)
    new_lead_after: Duration = timedelta(hours=2)
    repeat_every: Duration = timedelta(hours=4)
    escalate_after: int = Field(default=3, ge=1)
    overdue_escalate_after: Duration = timedelta(hours=24)
    working_hours: ClockRange = (time(9, 0), time(20, 0))
    digest_time: time = time(9, 0)


MIN_WEBHOOK_SECRET = 16


def check_webhook_secret(value: SecretStr) -> SecretStr:
    # Never echo the value: only its shortcoming.
    if len(value.get_secret_value()) < MIN_WEBHOOK_SECRET:
        raise ValueError(
            f"the secret is empty or shorter than {MIN_WEBHOOK_SECRET} characters; "
            "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


WebhookSecret = Annotated[SecretStr, AfterValidator(check_webhook_secret)]


def _origin(value: str) -> str:
    value = value.strip()
    if value == "*" or re.fullmatch(r"https?://[^/\s?#]+", value):
        return value
    raise ValueError(f"{value!r} is not an origin such as https://crm.example.com (scheme and host, no path) or *")


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network such as 10.0.0.1 or 10.0.0.0/8") from None
    return value.strip()


class ApiSection(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Per-source secrets for POST /api/leads/webhook/{source}; each at least MIN_WEBHOOK_SECRET characters.
    webhook_secrets: dict[str, WebhookSecret] = Field(default_factory=dict)
    # The largest request body read, in bytes; a larger one is answered 413 without reading it.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # How long a client may take to send its body (408 after), and to get the answer started (503 after).
    body_timeout: Duration = timedelta(seconds=10)
    request_timeout: Duration = timedelta(seconds=60)
    # Failed authentications (a wrong token or webhook secret) one client may make per window; then 429.
    auth_failures: int = Field(default=10, ge=1)
    auth_failure_window: Duration = timedelta(minutes=1)
    # Origins of a web front end served elsewhere ("https://crm.example.com"); empty = same origin only.
    cors_origins: list[Annotated[str, AfterValidator(_origin)]] = Field(default_factory=list)
    # Proxies (IPs or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto are believed; empty = none.
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = Field(default_factory=list)

    @field_validator("body_timeout", "request_timeout", "auth_failure_window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEADBOT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    bot: BotSection = Field(default_factory=BotSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    access: AccessSection = Field(default_factory=AccessSection)
    crm: CrmSection = Field(default_factory=CrmSection)
    notifications: NotificationsSection = Field(default_factory=NotificationsSection)
    reminders: RemindersSection = Field(default_factory=RemindersSection)
    api: ApiSection = Field(default_factory=ApiSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class ConfigError(Exception):
    """A configuration problem, worded for a person: one line per problem, no traceback."""


def load_settings(path: Path | str | None = "config.toml", *, required: bool = False) -> Settings:
    """Read ``path`` (when it exists) and the environment into validated settings."""
    toml_path: Path | None = None
    if path is not None:
        candidate = Path(path)
        if candidate.is_file():
            toml_path = candidate
        elif required:
            raise ConfigError(f"config file not found: {candidate}")
    token = _toml_path.set(toml_path)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # a TOML syntax error surfaces as tomllib's ValueError subclass
        raise ConfigError(f"{toml_path}: {exc}") from None
    finally:
        _toml_path.reset(token)


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        # Never echo the offending value: it may be the token.
        lines.append(f"config error: {key}: {message}")
    return "\n".join(lines)
