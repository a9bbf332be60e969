"""The settings the core itself needs: the database, access, the CRM's rules, notifications and reminders.

They live here, not with the bot, so that ``db/`` imports nothing from the interfaces; ``bot.config``
assembles them with the bot's and the HTTP API's own sections into one ``Settings``.
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from db.durations import ClockRange, Duration

DEFAULT_SOURCES = ["Instagram", "Facebook", "Google Ads", "Рекомендация", "Холодный звонок", "Сайт"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSection(Section):
    url: str = "sqlite+aiosqlite:///leadbot.db"
    echo: bool = False
    # On SQLite, ``leadbot run`` and ``leadbot api`` keep their threads on one CPU core (db.engine.one_core).
    one_core: bool = True


class AccessSection(Section):
    admins: list[int] = Field(default_factory=list)
    invite_ttl: Duration = timedelta(hours=48)


class CrmSection(Section):
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


class NotificationsSection(Section):
    team_chat_id: int | None = None
    team_thread_id: int | None = None
    rate_per_second: float = Field(default=25.0, gt=0, le=30)
    per_chat_interval: Duration = timedelta(seconds=1)
    group_per_minute: int = Field(default=20, ge=1)
    max_attempts: int = Field(default=8, ge=1)
    poll_interval: Duration = timedelta(seconds=1)


class RemindersSection(Section):
    tick: Duration = timedelta(minutes=1)
    new_lead_after: Duration = timedelta(hours=2)
    repeat_every: Duration = timedelta(hours=4)
    escalate_after: int = Field(default=3, ge=1)
    overdue_escalate_after: Duration = timedelta(hours=24)
    working_hours: ClockRange = (time(9, 0), time(20, 0))
    digest_time: time = time(9, 0)


AssignmentMode = Literal["manual", "round_robin", "least_loaded"]


class AssignmentSection(Section):
    """Who gets a new lead nobody assigned: ``manual`` (nobody: a manager assigns it), ``round_robin``
    (the next salesperson in turn) or ``least_loaded`` (the one with the fewest open leads)."""

    mode: AssignmentMode = "manual"
    # Outside these hours (in ``[crm] timezone``) new leads stay unassigned, for a manager to hand out.
    working_hours_only: bool = False
    working_hours: ClockRange = (time(9, 0), time(20, 0))
    # Per source: the Telegram ids of the salespeople its leads go to (the whole team when a source is
    # not listed, or when none of its people is available).
    sources: dict[str, list[int]] = Field(default_factory=dict)

    @property
    def automatic(self) -> bool:
        return self.mode != "manual"
