"""Settings: a TOML file validated by pydantic, every key overridable from the environment.

``LEADBOT_BOT__TOKEN=...`` overrides ``[bot] token``; the environment wins over the file. The file is
``--config PATH``, else ``$LEADBOT_CONFIG``, else ``./config.toml`` (``find_config``); a relative SQLite
path in ``database.url`` is read from the file's folder, so the bot finds its database wherever it is
started from.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from db.durations import Duration
from db.settings import (
    AccessSection,
    AssignmentSection,
    CrmSection,
    DatabaseSection,
    NotificationsSection,
    RemindersSection,
    Section,
)
from integrations.amocrm import AmoCrmSection
from integrations.bitrix24 import Bitrix24Section

_toml_path: ContextVar[Path | None] = ContextVar("leadbot_toml_path", default=None)


class BotSection(Section):
    token: SecretStr | None = None
    # Base URL of a self-hosted Bot API server (e.g. http://127.0.0.1:8081); Telegram's own when empty.
    api_server: str | None = None
    default_language: str = "ru"
    # Webhook mode: the public HTTPS address Telegram posts updates to (its path is where the bot
    # listens). Empty: long polling.
    webhook_url: str | None = None
    # Sent by Telegram with every update (X-Telegram-Bot-Api-Secret-Token) and checked: 16–256 of A-Z a-z 0-9 _ -.
    webhook_secret: SecretStr | None = None
    # Where the webhook server listens, "host:port" (a proxy in front terminates TLS).
    listen: str = "127.0.0.1:8443"

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an https:// address Telegram can reach")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", value.get_secret_value()):
            # Never echo the value: only its shortcoming.
            raise ValueError("must be 16 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.strip().rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError('must be "host:port", e.g. "127.0.0.1:8443"')
        return value.strip()

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> BotSection:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("webhook_secret: required with webhook_url (Telegram sends it with every update)")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

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


class ApiSection(Section):
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


META_TARGETS = ("client_name", "phone_number", "budget", "notes")


class MetaSection(Section):
    """Meta lead ads (Instagram and Facebook instant forms): ``/api/meta/webhook`` and the Graph API."""

    # The app's secret: X-Hub-Signature-256 is an HMAC-SHA256 of each delivery with it.
    app_secret: SecretStr | None = None
    # What the subscription check (GET /api/meta/webhook) must present as hub.verify_token.
    verify_token: SecretStr | None = None
    # A page access token with leads_retrieval: the answers are fetched with it.
    page_access_token: SecretStr | None = None
    graph_version: str = "v25.0"
    graph_url: str = "https://graph.facebook.com"
    # Form field -> lead field (client_name, phone_number, budget, notes); other answers go into the notes.
    fields: dict[str, str] = Field(default_factory=lambda: {"full_name": "client_name", "phone_number": "phone_number"})
    # The lead's source by the form's platform.
    instagram_source: str = "Instagram"
    facebook_source: str = "Facebook"
    # A failed Graph fetch is tried again after retry_after, doubling up to max_retry_after, max_attempts times.
    retry_after: Duration = timedelta(seconds=30)
    max_retry_after: Duration = timedelta(hours=1)
    max_attempts: int = Field(default=12, ge=1)
    timeout: Duration = timedelta(seconds=10)
    # The Conversions API for CRM (``integrations.meta_capi``): each lead's stages go back to Meta, so
    # its ads learn which leads turn into deals. Needs both of these; independent of ``enabled`` above.
    # The dataset (pixel) id, from Events Manager.
    pixel_id: str | None = None
    # A system user's access token with access to that dataset (Events Manager, Conversions API settings).
    capi_access_token: SecretStr | None = None
    # Requests per second we allow ourselves (each carries up to 1,000 events).
    capi_rate: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    # Tries per stage event before it is given up (a refusal by Meta gives it up at once).
    capi_max_attempts: int = Field(default=12, ge=1)

    @field_validator("fields")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        for name, target in value.items():
            if target not in META_TARGETS:
                raise ValueError(f"{name!r} maps to {target!r}; one of {', '.join(META_TARGETS)}")
        return value

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// or http://")
        return value

    @field_validator("pixel_id", mode="before")
    @classmethod
    def _pixel_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a TOML number
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if not (value.isascii() and value.isdigit()):
                raise ValueError("must be the dataset (pixel) id: digits only, as Events Manager shows it")
        return value

    @field_validator("capi_access_token")
    @classmethod
    def _capi_access_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @property
    def enabled(self) -> bool:
        return self.app_secret is not None and self.verify_token is not None and self.page_access_token is not None

    @property
    def capi_enabled(self) -> bool:
        """Stages go back to Meta (the Conversions API for CRM): a dataset id and its token are set."""
        return self.pixel_id is not None and self.capi_access_token is not None


class RedisSection(Section):
    # e.g. "redis://127.0.0.1:6379/0": conversations (the /new draft, a card's prompt) are kept there, so
    # they survive a restart and are shared by every instance. Empty: kept in the process's memory.
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class GoogleSheetsSection(Section):
    """The live Google Sheets export (``bot.sheets``): off while ``spreadsheet_id`` is empty."""

    # A service account's JSON key file; the spreadsheet must be shared with its client_email.
    credentials_file: str | None = None
    spreadsheet_id: str | None = None
    sheet: str = "Leads"
    api_url: str = "https://sheets.googleapis.com"
    token_url: str = "https://oauth2.googleapis.com/token"
    # Changes are gathered for this long and written together (at most one write per interval).
    debounce: Duration = timedelta(seconds=5)
    # Google allows 60 writes a minute per user; a margin is kept.
    writes_per_minute: int = Field(default=50, ge=1, le=60)
    batch: int = Field(default=500, ge=1, le=5000)

    @field_validator("credentials_file")
    @classmethod
    def _service_account_key(cls, value: str | None) -> str | None:
        """Checked when the config is read, so a bad key file stops ``leadbot run`` with one clear line."""
        if value is None or not value.strip():
            return None
        try:
            info = json.loads(Path(value).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
        except ValueError:
            raise ValueError(f"{value} is not JSON (a service account's key file is)") from None
        if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("client_email", "private_key")):
            raise ValueError(f"{value} has no client_email and private_key: not a service account's key file")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.spreadsheet_id and self.credentials_file)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEADBOT_",
        env_nested_delimiter="__",
        extra="forbid",
        # A bad value is named, never echoed: some are secrets (the Bitrix24 webhook's address is one).
        hide_input_in_errors=True,
    )

    bot: BotSection = Field(default_factory=BotSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    access: AccessSection = Field(default_factory=AccessSection)
    crm: CrmSection = Field(default_factory=CrmSection)
    notifications: NotificationsSection = Field(default_factory=NotificationsSection)
    reminders: RemindersSection = Field(default_factory=RemindersSection)
    assignment: AssignmentSection = Field(default_factory=AssignmentSection)
    api: ApiSection = Field(default_factory=ApiSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    meta: MetaSection = Field(default_factory=MetaSection)
    google_sheets: GoogleSheetsSection = Field(default_factory=GoogleSheetsSection)
    amocrm: AmoCrmSection = Field(default_factory=AmoCrmSection)
    bitrix24: Bitrix24Section = Field(default_factory=Bitrix24Section)

    @property
    def integrations(self) -> frozenset[str]:
        """The remote CRMs configured: each gets every change of a lead (``db.integrations``)."""
        enabled = {"amocrm": self.amocrm.enabled, "bitrix24": self.bitrix24.enabled, "meta": self.meta.capi_enabled}
        return frozenset(name for name, on in enabled.items() if on)

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


CONFIG_ENV = "LEADBOT_CONFIG"
DEFAULT_CONFIG = "config.toml"


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Which config file a command uses (``path``, None for none) and how it was found."""

    path: Path | None
    origin: str  # "--config", CONFIG_ENV, "the current directory", or why there is none

    def describe(self) -> str:
        if self.path is None:
            return f"config: none ({self.origin}); using defaults and LEADBOT_* environment variables"
        return f"config: {self.path} (from {self.origin})"


def find_config(
    explicit: str | Path | None = None, *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> ConfigSource:
    """The config file: ``explicit`` (``--config``), else ``$LEADBOT_CONFIG``, else ``config.toml`` here.

    A file named explicitly or by the variable must exist (ConfigError otherwise); the implicit one may be
    absent, and then none is used.
    """
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    named: list[tuple[str | Path | None, str]] = [(explicit, "--config"), (environ.get(CONFIG_ENV), CONFIG_ENV)]
    for value, origin in named:
        if value is None or not str(value).strip():
            continue
        path = cwd / Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {value} (given by {origin})")
        return ConfigSource(path.resolve(), origin)
    implicit = cwd / DEFAULT_CONFIG
    if implicit.is_file():
        return ConfigSource(implicit.resolve(), "the current directory")
    return ConfigSource(None, f"no --config, {CONFIG_ENV} not set, no {DEFAULT_CONFIG} in {cwd}")


def load_settings(path: Path | str | None = DEFAULT_CONFIG, *, required: bool = False) -> Settings:
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
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    except ValueError as exc:  # a TOML syntax error surfaces as tomllib's ValueError subclass
        raise ConfigError(f"{toml_path}: {exc}") from None
    finally:
        _toml_path.reset(token)
    if toml_path is not None:
        url = sqlite_url_relative_to(settings.database.url, toml_path.resolve().parent)
        if url != settings.database.url:
            settings.database.url = url
    return settings


def sqlite_url_relative_to(url: str, folder: Path) -> str:
    """``url`` with a relative SQLite file path made absolute against ``folder``; any other URL as it is."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url  # only the commands that read settings pay for it
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # reported where the URL is used
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(folder / database)).render_as_string(hide_password=False)


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
