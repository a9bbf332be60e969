"""SQLAlchemy 2 typed models: the reference's Lead / Comment / LeadHistory plus what the bot needs."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

from db.enums import LeadStatus, OutboxStatus, Role
from db.validation import fold_for_search


def utcnow() -> datetime:
    return datetime.now(UTC)


# Ids are 64-bit everywhere: BIGINT on PostgreSQL; on SQLite plain INTEGER, which is 64-bit there and
# must stay so for a primary key to be the rowid.
ID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back aware UTC: SQLite keeps no zone and comparisons must not mix."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


LIVE = text("deleted_at IS NULL")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str | None] = mapped_column(String(128))
    username: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(String(16))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    language: Mapped[str | None] = mapped_column(String(8))
    # Set when Telegram answered 403 (blocked the bot / left); cleared when the user writes again.
    unreachable_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # On leave: keeps their leads but gets no new ones from automatic assignment.
    paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    @property
    def full_name(self) -> str:
        return person_name(self.first_name, self.last_name, self.id)


def person_name(first_name: str | None, last_name: str | None, user_id: int) -> str:
    """A user's full name from its columns (``User.full_name``, and lists that read only the columns)."""
    return " ".join(part for part in (first_name, last_name) if part) or f"#{user_id}"


class Invite(Base):
    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(String(16))
    created_by_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_by_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id"))
    used_at: Mapped[datetime | None]


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        # One live lead per phone: the index decides races, not a check-then-insert.
        Index("uq_leads_live_phone", "phone_number", unique=True, sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_leads_live_status", "status", "id", sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_leads_live_source", "source", "id", sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_leads_live_assignee", "assigned_to_id", "status", "id", sqlite_where=LIVE, postgresql_where=LIVE),
        # The /leads list: newest first with no filter, and per salesperson without a status filter.
        Index("ix_leads_live_id", "id", sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_leads_live_assignee_id", "assigned_to_id", "id", sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_leads_reminder_due", "status", "next_reminder_at", sqlite_where=LIVE, postgresql_where=LIVE),
        Index("ix_leads_updated_at", "updated_at", "id"),
        # The reports: the leads created in a period (db.analytics).
        Index("ix_leads_live_created", "created_at", "id", sqlite_where=LIVE, postgresql_where=LIVE),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    client_name: Mapped[str] = mapped_column(String(200))
    # fold_for_search(client_name), kept in step by _fold_name: what /find compares against.
    search_name: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    phone_number: Mapped[str] = mapped_column(String(20))
    status: Mapped[LeadStatus] = mapped_column(String(16), default=LeadStatus.NEW)
    source: Mapped[str] = mapped_column(String(64))
    budget: Mapped[float | None] = mapped_column(Float)
    notes: Mapped[str | None] = mapped_column(Text)
    assigned_to_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id"))
    created_by_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When a person or an integration last changed the lead: set by the repositories on each such change,
    # never by an UPDATE as such, so the jobs' bookkeeping below leaves it (and the caches keyed on it) alone.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closing_date: Mapped[date | None] = mapped_column(Date)
    refusal_reason: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None]
    deleted_by_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id"))
    # Reminder state lives here so restarts neither repeat nor skip a reminder.
    reminder_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_reminder_at: Mapped[datetime | None]
    # What the reports need of the lead's history and comments, kept by the repositories in the same
    # transaction as the rows they sum up (db.lead_facts has the rules): bookkeeping, like the reminder
    # state, so writing them never moves updated_at by itself.
    assigned_at: Mapped[datetime | None]  # its latest ``assigned`` history row
    first_response_at: Mapped[datetime | None]  # the assignee's first status change or comment since
    ever_in_work: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))

    assigned_to: Mapped[User | None] = relationship(foreign_keys=[assigned_to_id], lazy="joined")
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id], lazy="joined")

    @validates("client_name")
    def _fold_name(self, _key: str, value: str) -> str:
        self.search_name = fold_for_search(value)
        return value


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_lead", "lead_id", "id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ID, ForeignKey("leads.id"))
    text: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    created_by: Mapped[User] = relationship(lazy="joined")


class LeadHistory(Base):
    __tablename__ = "lead_history"
    __table_args__ = (Index("ix_lead_history_lead", "lead_id", "id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ID, ForeignKey("leads.id"))
    action: Mapped[str] = mapped_column(String(32))
    # Which field an ``updated`` row is about; empty for the other actions.
    field: Mapped[str | None] = mapped_column(String(32))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    # Empty when the system itself acted (e.g. an intake webhook).
    changed_by_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)

    changed_by: Mapped[User | None] = relationship(lazy="joined")


class FollowUp(Base):
    __tablename__ = "followups"
    __table_args__ = (
        Index("ix_followups_open_due", "done_at", "due_at"),
        # A lead's open follow-ups, soonest first (the card): without done_at here SQLite would walk
        # every open follow-up of the team in due order instead.
        Index("ix_followups_lead", "lead_id", "done_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ID, ForeignKey("leads.id"))
    text: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime]
    created_by_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]


class AssignmentCursor(Base):
    """Round-robin state, one row per scope ("all", or "source:<name>" for a source's own list): who got
    the last automatic assignment. Read and written under the lead's write unit, so it survives restarts
    and two instances take turns on it (the row is locked on PostgreSQL; SQLite has one writer)."""

    __tablename__ = "assignment_cursors"

    scope: Mapped[str] = mapped_column(String(96), primary_key=True)
    last_user_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MetaLeadgen(Base):
    """A Meta lead-ads delivery (Instagram or Facebook instant form), one row per ``leadgen_id``.

    The webhook writes the row (a repeat delivery writes nothing: the unique index), the fetcher claims it
    (``fetching``, ``next_attempt_at`` the end of the lease), asks the Graph API for the answers and
    creates the lead (``done``, ``lead_id``), or tries again later with backoff (back to ``pending``), or
    gives up after ``[meta] max_attempts`` or on answers that make no lead (``failed``, ``last_error``).
    The row stays either way: the leadgen id is never lost.
    """

    __tablename__ = "meta_leadgen"
    __table_args__ = (
        Index("ix_meta_leadgen_due", "status", "next_attempt_at"),
        # A lead's Meta origin (the card, the API's lead detail).
        Index("ix_meta_leadgen_lead", "lead_id"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    leadgen_id: Mapped[str] = mapped_column(String(64), unique=True)
    page_id: Mapped[str | None] = mapped_column(String(64))
    form_id: Mapped[str | None] = mapped_column(String(64))
    ad_id: Mapped[str | None] = mapped_column(String(64))
    platform: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    lead_id: Mapped[int | None] = mapped_column(ID, ForeignKey("leads.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class OutboxMessage(Base):
    """A notification waiting to be sent; written in the same transaction as the change causing it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "status", "next_attempt_at", "id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    thread_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(ID, ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[OutboxStatus] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id"))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    lead_id: Mapped[int | None] = mapped_column(ID, ForeignKey("leads.id"))
    response: Mapped[dict[str, Any] | None]
    # SHA-256 (hex) of the request the key was first used for; null for keys stored before it was kept.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IntegrationJob(Base):
    """A change waiting to be sent to a remote CRM (amoCRM, Bitrix24, Meta's Conversions API), or a remote
    change waiting to be read from it (``pull``); written in the same transaction as the change itself.

    One row per (integration, change): ``idempotency_key`` makes queueing the same change twice a no-op.
    The worker sends the oldest unfinished job of each lead first, so a lead's changes arrive in order.
    Life of a row: ``pending`` → ``sending`` (claimed; ``next_attempt_at`` = end of the lease) → ``done`` |
    back to ``pending`` (retry later, with backoff) | ``failed`` (after ``max_attempts`` or a refusal;
    an admin may queue it again).
    """

    __tablename__ = "integration_jobs"
    __table_args__ = (
        Index("ix_integration_jobs_due", "integration", "status", "next_attempt_at", "id"),
        Index("ix_integration_jobs_lead", "integration", "lead_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    integration: Mapped[str] = mapped_column(String(16))
    lead_id: Mapped[int] = mapped_column(ID, ForeignKey("leads.id"))
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class IntegrationLink(Base):
    """Our lead ↔ the remote CRM's lead: one remote lead per lead and integration, and back."""

    __tablename__ = "integration_links"
    __table_args__ = (
        UniqueConstraint("integration", "lead_id", name="uq_integration_links_lead"),
        UniqueConstraint("integration", "remote_id", name="uq_integration_links_remote"),
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    integration: Mapped[str] = mapped_column(String(16))
    lead_id: Mapped[int] = mapped_column(ID, ForeignKey("leads.id"))
    remote_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IntegrationState(Base):
    """Per integration: who sends, the last success, and what it must keep between restarts (amoCRM's
    rotating OAuth tokens). ``secrets`` never leaves the core: no view or log shows it. The row
    ``google_sheets`` serves the Sheets export (``bot.sheets``) the same way: its turn says which instance
    writes, its ``secrets`` hold a pending resync."""

    __tablename__ = "integration_state"

    integration: Mapped[str] = mapped_column(String(16), primary_key=True)
    # The one worker (of any instance) sending for this integration until ``sender_until``: the remote
    # side's rate limit is the account's, so two instances must not each send at the full rate.
    sender_id: Mapped[str | None] = mapped_column(String(64))
    sender_until: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    secrets: Mapped[dict[str, Any] | None]
