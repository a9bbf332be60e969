"""Request and response bodies, shaped exactly like the reference's JSON examples.

Additions to the reference (never replacing its fields): ``updated_at``/``assigned_to`` on list items,
``budget``/``notes``/``closing_date``/``refusal_reason`` on lead bodies, ``field`` on history rows,
``refusal_reason`` and the other editable fields on PATCH.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    Strict,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from db.enums import LeadStatus
from db.errors import InvalidInput
from db.models import Comment, Lead, LeadHistory, User
from db.repositories import LeadDetail
from db.rows import MetaOriginRow
from db.validation import MAX_BUDGET, MAX_COMMENT, MAX_NAME, MAX_NOTES, MAX_REASON, has_visible_text, visible_text

# Ids stop at 2**53 - 1: the largest integer a JavaScript front end (and any JSON reader using doubles)
# holds exactly, so the bound the schema announces is the bound the server applies. SQLite's own
# INTEGER range is larger; a lead id will not get there.
MAX_ID = 2**53 - 1
MAX_PHONE = 32
MAX_SOURCE = 64
TEXT_RULE = "No control characters but newline and tab; at least one visible character."

# ---- field types ---------------------------------------------------------------------------------------


def _utc_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ISO 8601, UTC, whole seconds, ``Z``: "2025-12-03T10:00:00Z" as in the reference.
UtcDateTime = Annotated[
    datetime,
    PlainSerializer(_utc_z, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2025-12-03T10:00:00Z"]}),
]


def _number(value: float) -> float | int:
    return int(value) if value.is_integer() else value


# A whole budget is written as 50000, not 50000.0, as in the reference.
Number = Annotated[float, PlainSerializer(_number), WithJsonSchema({"type": "number", "examples": [50000]})]
# A number in a request is a JSON number: not true/false, not "50000" (strict).
Budget = Annotated[float, Strict(), Field(ge=0, le=MAX_BUDGET, allow_inf_nan=False)]
# An id in a request body is a JSON integer: not true, not 7.0, not "7" (strict).
Id = Annotated[int, Strict(), Field(ge=1, le=MAX_ID)]


def _visible(value: str, info: ValidationInfo) -> str:
    """``db.validation.visible_text`` as a pydantic check: the error names the field and its reason."""
    try:
        return visible_text(value, info.field_name or "text")
    except InvalidInput as error:
        raise PydanticCustomError(error.reason, error.message) from None


def _visible_or_none(value: str | None, info: ValidationInfo) -> str | None:
    """Optional text: nothing visible (``""``, spaces, zero-width characters) means none."""
    if value is None:
        return None
    try:
        return value if has_visible_text(value, info.field_name or "text") else None
    except InvalidInput as error:
        raise PydanticCustomError(error.reason, error.message) from None


# Text a person gives: a JSON string (strict) that passes ``visible_text``.
Text = Annotated[str, Strict(), AfterValidator(_visible)]
# Optional text: the same rule, but with nothing visible it is null.
OptionalText = Annotated[Annotated[str, Strict()] | None, AfterValidator(_visible_or_none)]


def visible_param(name: str) -> AfterValidator:
    """The text rule for a query or path parameter, the error naming ``name``."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return visible_text(value, name)
        except InvalidInput as error:
            raise PydanticCustomError(error.reason, error.message) from None

    return AfterValidator(check)


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date_only(value: Any) -> Any:
    """Only ``YYYY-MM-DD``: pydantic alone reads ``"0"`` or ``"86400"`` as a Unix time (1970-01-01)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value  # pydantic then refuses a day that does not exist (2025-02-30)
    raise PydanticCustomError("date_iso", "must be an ISO date such as 2025-12-05")


# A calendar day, in a body or a query: ``YYYY-MM-DD`` and nothing else.
IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]


def _ascii_digits(value: Any) -> Any:
    """A whole number in a query or path: ASCII digits only (pydantic alone takes ``1.0``, ``+4``, `` 5``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    raise PydanticCustomError("int_parsing", "must be a whole number written in digits (0-9)")


# An integer query parameter: digits, nothing else.
QueryInt = Annotated[int, BeforeValidator(_ascii_digits)]


def _iso_8601(value: Any) -> Any:
    """Only an ISO 8601 time with its dashes (2025-12-03, 2025-12-03T10:00:00Z): pydantic alone would
    read ``0.5`` or ``1700000000`` as a Unix time, and plain digits are never taken for a date."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and "-" in value[1:]:
        try:
            return datetime.fromisoformat(value.upper())
        except ValueError:
            pass
    raise PydanticCustomError("datetime_iso", "must be an ISO 8601 time such as 2025-12-03T10:00:00Z")


def _as_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time out of range") from None


Since = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_as_utc)]

# ---- responses -----------------------------------------------------------------------------------------


class UserRef(BaseModel):
    id: int
    first_name: str
    last_name: str | None

    @classmethod
    def of(cls, user: User | None) -> UserRef | None:
        if user is None:
            return None
        return cls(id=user.id, first_name=user.first_name, last_name=user.last_name)


class LeadListItem(BaseModel):
    """One row of ``GET /api/leads/``."""

    id: int
    client_name: str
    phone_number: str = Field(description="E.164, e.g. +998901234567")
    status: LeadStatus
    source: str
    created_at: UtcDateTime
    updated_at: UtcDateTime = Field(description="Addition: when the lead last changed (for syncing)")
    assigned_to: UserRef | None = Field(description="Addition: the salesperson, or null")

    @classmethod
    def of(cls, lead: Lead) -> LeadListItem:
        return cls(**_lead_fields(lead))


class LeadOut(LeadListItem):
    """The lead itself: the answer to ``POST /api/leads/create``."""

    budget: Number | None
    notes: str | None
    closing_date: date | None
    refusal_reason: str | None

    @classmethod
    def of(cls, lead: Lead) -> LeadOut:
        return cls(**_lead_fields(lead), **_lead_extra(lead))


class CommentOut(BaseModel):
    """The answer to ``POST /api/leads/{id}/comment``: ``created_by`` as an object."""

    id: int
    text: str
    created_by: UserRef
    created_at: UtcDateTime

    @classmethod
    def of(cls, comment: Comment) -> CommentOut:
        author = UserRef.of(comment.created_by)
        assert author is not None
        return cls(id=comment.id, text=comment.text, created_by=author, created_at=comment.created_at)


class CommentRow(BaseModel):
    """A comment inside the lead detail: ``created_by`` as a display name, as the reference shows."""

    id: int
    text: str
    created_by: str = Field(examples=["Продажник Иванов"])
    created_at: UtcDateTime


class HistoryRow(BaseModel):
    action: str = Field(
        description="created, status_changed, assigned, updated, deleted, followup_set, followup_done",
        examples=["status_changed"],
    )
    field: str | None = Field(default=None, description="Addition: which field an `updated` row is about")
    old_value: str | None
    new_value: str | None
    changed_by: str | None = Field(description="Display name; null when the system itself acted")
    changed_at: UtcDateTime


class MetaOut(BaseModel):
    """Addition: the Meta lead-ads delivery (Instagram or Facebook instant form) a lead came from."""

    leadgen_id: str = Field(examples=["1234567890123456"])
    form_id: str | None = Field(description="The instant form's id, when Meta sent it")
    ad_id: str | None = Field(description="The ad's id, when Meta sent it")
    page_id: str | None = Field(description="The Facebook page's id, when Meta sent it")
    platform: str | None = Field(description="As the Graph API names it (`fb`, `ig`), once the lead is fetched")

    @classmethod
    def of(cls, meta: MetaOriginRow | None) -> MetaOut | None:
        if meta is None:
            return None
        return cls(
            leadgen_id=meta.leadgen_id,
            form_id=meta.form_id,
            ad_id=meta.ad_id,
            page_id=meta.page_id,
            platform=meta.platform,
        )


class LeadDetailOut(LeadOut):
    """``GET /api/leads/{id}``: the lead with all its comments and history, oldest first."""

    comments: list[CommentRow]
    history: list[HistoryRow]
    meta: MetaOut | None = Field(description="Addition: the Meta lead ad the lead came from, or null")
    integrations: dict[str, str] = Field(
        description="Addition: the lead's id in each remote CRM it is linked to (`amocrm`, `bitrix24`); "
        "the linked ones only, `{}` when none",
        examples=[{"amocrm": "30000001", "bitrix24": "77"}],
    )

    @classmethod
    def of_detail(
        cls, detail: LeadDetail, meta: MetaOriginRow | None = None, links: dict[str, str] | None = None
    ) -> LeadDetailOut:
        return cls(
            **_lead_fields(detail.lead),
            **_lead_extra(detail.lead),
            comments=[_comment_row(c) for c in detail.comments],
            history=[_history_row(h) for h in detail.history],
            meta=MetaOut.of(meta),
            integrations=dict(links or {}),
        )


class LeadPage(BaseModel):
    items: list[LeadListItem]
    total: int
    page: int
    size: int
    pages: int


class Health(BaseModel):
    status: str = Field(examples=["ok"])


# ---- requests ------------------------------------------------------------------------------------------


_CREATE_EXAMPLE: dict[str, JsonValue] = {
    "client_name": "Иван Петров",
    "phone_number": "+998901234567",
    "source": "Instagram",
    "budget": 50000,
    "notes": "Интересуется 2-комнатной квартирой",
    "assigned_to": 5,
}


class LeadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CREATE_EXAMPLE]})

    client_name: Text = Field(min_length=1, max_length=MAX_NAME, description=TEXT_RULE)
    phone_number: Text = Field(
        min_length=1, max_length=MAX_PHONE, description="Any common format; stored as E.164 (+998901234567)"
    )
    source: Text = Field(min_length=1, max_length=MAX_SOURCE, description="One of the configured sources")
    budget: Budget | None = Field(default=None, description="A JSON number (not a string, not a boolean)")
    notes: OptionalText = Field(default=None, max_length=MAX_NOTES, description=f"{TEXT_RULE} Blank means none.")
    assigned_to: Id | None = Field(default=None, description="Id of an active salesperson to assign at once")


class WebhookLead(BaseModel):
    """A lead from a website form or another system; unknown fields are ignored."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"client_name": "Иван Петров", "phone_number": "+998901234567"}]},
    )

    client_name: Text = Field(min_length=1, max_length=MAX_NAME, description=TEXT_RULE)
    phone_number: Text = Field(min_length=1, max_length=MAX_PHONE)
    source: OptionalText = Field(
        default=None, max_length=MAX_SOURCE, description="Defaults to the {source} of the URL (also when blank)"
    )
    budget: Budget | None = Field(default=None, description="A JSON number (not a string, not a boolean)")
    notes: OptionalText = Field(default=None, max_length=MAX_NOTES, description=f"{TEXT_RULE} Blank means none.")
    assigned_to: Id | None = None


class LeadPatch(BaseModel):
    """Only the fields sent change; ``null`` clears ``budget``, ``notes`` or ``closing_date``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"status": "закрыт", "notes": "Клиент купил квартиру №45", "closing_date": "2025-12-05"}]
        },
    )

    status: LeadStatus | None = Field(
        default=None,
        description="новый → в работе → закрыт | отказ, новый → отказ; reopening is for admin and ROP",
    )
    refusal_reason: Text | None = Field(
        default=None,
        max_length=MAX_REASON,
        description="Addition: required with a move to «отказ», refused without one",
    )
    client_name: Text | None = Field(default=None, max_length=MAX_NAME, description=TEXT_RULE)
    phone_number: Text | None = Field(default=None, max_length=MAX_PHONE)
    source: Text | None = Field(default=None, max_length=MAX_SOURCE)
    budget: Budget | None = Field(default=None, description="A JSON number; null clears it")
    notes: OptionalText = Field(default=None, max_length=MAX_NOTES, description=f"{TEXT_RULE} Null or blank clears.")
    closing_date: IsoDate | None = Field(default=None, description="ISO date, e.g. 2025-12-05; null clears it")
    assigned_to: Id | None = Field(default=None, description="Addition: reassign (as POST …/assign)")


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"assigned_to": 7}]})

    assigned_to: Id


class CommentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "Клиент попросил отправить планировки"}]}
    )

    text: Text = Field(min_length=1, max_length=MAX_COMMENT, description=TEXT_RULE)


# ---- mapping -------------------------------------------------------------------------------------------


def _lead_fields(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "client_name": lead.client_name,
        "phone_number": lead.phone_number,
        "status": lead.status,
        "source": lead.source,
        "created_at": lead.created_at,
        "updated_at": lead.updated_at,
        "assigned_to": UserRef.of(lead.assigned_to),
    }


def _lead_extra(lead: Lead) -> dict[str, Any]:
    return {
        "budget": lead.budget,
        "notes": lead.notes,
        "closing_date": lead.closing_date,
        "refusal_reason": lead.refusal_reason,
    }


def _comment_row(comment: Comment) -> CommentRow:
    return CommentRow(
        id=comment.id, text=comment.text, created_by=comment.created_by.full_name, created_at=comment.created_at
    )


def _history_row(row: LeadHistory) -> HistoryRow:
    return HistoryRow(
        action=row.action,
        field=row.field,
        old_value=row.old_value,
        new_value=row.new_value,
        changed_by=row.changed_by.full_name if row.changed_by else None,
        changed_at=row.changed_at,
    )
