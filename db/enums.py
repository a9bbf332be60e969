from __future__ import annotations

from enum import IntEnum, StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    ROP = "rop"
    MOP = "mop"
    SELLER = "seller"
    FINANCE = "finance"


class LeadStatus(StrEnum):
    """The reference's four statuses; the Russian words are the stored and API value."""

    NEW = "новый"
    IN_WORK = "в работе"
    CLOSED = "закрыт"
    REFUSED = "отказ"

    @property
    def code(self) -> StatusCode:
        return _STATUS_TO_CODE[self]


class StatusCode(IntEnum):
    """A compact stand-in for a status inside callback data (64-byte limit)."""

    NEW = 1
    IN_WORK = 2
    CLOSED = 3
    REFUSED = 4

    @property
    def status(self) -> LeadStatus:
        return _CODE_TO_STATUS[self]


_STATUS_TO_CODE = {
    LeadStatus.NEW: StatusCode.NEW,
    LeadStatus.IN_WORK: StatusCode.IN_WORK,
    LeadStatus.CLOSED: StatusCode.CLOSED,
    LeadStatus.REFUSED: StatusCode.REFUSED,
}
_CODE_TO_STATUS = {code: status for status, code in _STATUS_TO_CODE.items()}


# Moves anyone allowed to update the lead may make.
FORWARD_MOVES: dict[LeadStatus, frozenset[LeadStatus]] = {
    LeadStatus.NEW: frozenset({LeadStatus.IN_WORK, LeadStatus.REFUSED}),
    LeadStatus.IN_WORK: frozenset({LeadStatus.CLOSED, LeadStatus.REFUSED}),
    LeadStatus.CLOSED: frozenset(),
    LeadStatus.REFUSED: frozenset(),
}
# Reopening a finished lead is for admin and ROP only.
REOPEN_MOVES: dict[LeadStatus, frozenset[LeadStatus]] = {
    LeadStatus.CLOSED: frozenset({LeadStatus.IN_WORK}),
    LeadStatus.REFUSED: frozenset({LeadStatus.NEW, LeadStatus.IN_WORK}),
}


class HistoryAction(StrEnum):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    ASSIGNED = "assigned"
    UPDATED = "updated"
    DELETED = "deleted"
    FOLLOWUP_SET = "followup_set"
    FOLLOWUP_DONE = "followup_done"


class LeadField(StrEnum):
    """Editable fields; the value is what history records in ``old_value``/``new_value`` context."""

    CLIENT_NAME = "client_name"
    PHONE_NUMBER = "phone_number"
    SOURCE = "source"
    BUDGET = "budget"
    NOTES = "notes"
    CLOSING_DATE = "closing_date"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    # Claimed by the delivery worker and handed to Telegram; ``next_attempt_at`` is the lease's end.
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class DuePreset(StrEnum):
    """Due-time buttons of the follow-up conversation (local time)."""

    IN_HOUR = "h"
    TODAY_18 = "e"
    TOMORROW_10 = "t"


class SnoozeUntil(StrEnum):
    HOUR = "h"  # one hour from the press
    TOMORROW = "t"  # tomorrow 10:00 local
