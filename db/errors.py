"""Typed domain errors. Each interface words them itself (the bot per language, the API as JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from db.enums import LeadStatus


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.message = message
        self.params = params


class InvalidInput(DomainError):
    """Bad data. ``reason`` is a stable key (``phone_invalid``, ``name_empty``…) the interfaces translate."""

    code = "invalid_input"

    def __init__(self, field: str, reason: str, message: str, **params: Any) -> None:
        super().__init__(message, **params)
        self.field = field
        self.reason = reason


class NotFound(DomainError):
    code = "not_found"

    def __init__(self, entity: str, entity_id: int | str) -> None:
        super().__init__(f"{entity} {entity_id} not found", entity=entity, entity_id=entity_id)
        self.entity = entity
        self.entity_id = entity_id


class Forbidden(DomainError):
    """The acting user may not do ``action`` (``create``, ``view``, ``update``, ``assign``…)."""

    code = "forbidden"

    def __init__(self, action: str, message: str | None = None) -> None:
        super().__init__(message or f"not allowed to {action}", action=action)
        self.action = action


class DuplicateLead(DomainError):
    code = "duplicate"

    def __init__(self, phone_number: str, existing_lead_id: int) -> None:
        super().__init__(
            f"a lead with phone {phone_number} already exists (#{existing_lead_id})",
            phone_number=phone_number,
            existing_lead_id=existing_lead_id,
        )
        self.phone_number = phone_number
        self.existing_lead_id = existing_lead_id


class IdempotencyKeyReused(DomainError):
    """An idempotency key sent again with a different request: its first answer would be a lie."""

    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__("this Idempotency-Key was already used for a different request; use a new key")
        self.key = key


class InvalidTransition(DomainError):
    code = "invalid_transition"

    def __init__(self, current: LeadStatus, target: LeadStatus, allowed: Iterable[LeadStatus]) -> None:
        self.current = current
        self.target = target
        self.allowed = sorted(allowed, key=lambda s: s.code)
        names = ", ".join(f"«{s.value}»" for s in self.allowed) or "none"
        super().__init__(
            f"cannot move from «{current.value}» to «{target.value}»; allowed: {names}",
            current=current.value,
            target=target.value,
            allowed=[s.value for s in self.allowed],
        )
