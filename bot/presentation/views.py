"""Rendering shared by handlers, notifications and jobs: escaping, formats, the lead card, error texts."""

from __future__ import annotations

import html
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.config import CrmSection
from bot.texts import Texts
from db.enums import LeadStatus
from db.errors import DomainError, DuplicateLead, Forbidden, InvalidInput, InvalidTransition, NotFound
from db.permissions import Actor
from db.rows import PersonRow
from db.validation import format_phone

MESSAGE_LIMIT = 4096
CALLBACK_ANSWER_LIMIT = 200
_CURRENCY_SIGNS = {"USD": "$", "EUR": "€", "RUB": "₽", "GBP": "£"}


def esc(value: object) -> str:
    """Escape user-supplied text for Telegram HTML."""
    text = "" if value is None else str(value)
    # Most names and notes have nothing to escape; three scans are cheaper than three replaces.
    if "&" not in text and "<" not in text and ">" not in text:
        return text
    return html.escape(text, quote=False)


def status_label(texts: Texts, status: LeadStatus | str) -> str:
    return texts.t(f"status.{LeadStatus(status).value}")


def role_label(texts: Texts, role: str) -> str:
    return texts.t(f"role.{role}")


def user_label(user: Actor | PersonRow | None, texts: Texts | None = None) -> str:
    if user is None:
        return texts.t("common.none") if texts else "—"
    name = esc(user.full_name)
    return f"{name} (@{esc(user.username)})" if user.username else name


def format_money(amount: float | None, currency: str) -> str:
    if amount is None:
        return "—"
    whole = f"{amount:,.0f}" if amount == int(amount) else f"{amount:,.2f}"
    sign = _CURRENCY_SIGNS.get(currency.upper())
    if sign:
        return f"{sign}{whole}"
    return f"{whole.replace(',', ' ')} {currency.upper()}"


def format_dt(moment: datetime | None, tz: ZoneInfo) -> str:
    if moment is None:
        return "—"
    local = moment.astimezone(tz)
    # "%d.%m.%Y %H:%M" without strftime, which is several times slower (a card shows a dozen dates).
    return f"{local.day:02d}.{local.month:02d}.{local.year:04d} {local.hour:02d}:{local.minute:02d}"


def format_phone_html(e164: str) -> str:
    return f"<code>{esc(format_phone(e164))}</code>"


def cut(text: str, limit: int = MESSAGE_LIMIT, marker: str = "…") -> str:
    """Cut to ``limit`` characters without leaving a broken HTML tag or entity behind."""
    if len(text) <= limit:
        return text
    budget = limit - len(marker)
    head = text[:budget]
    # Drop an unfinished tag or entity at the cut.
    lt, gt = head.rfind("<"), head.rfind(">")
    if lt > gt:
        head = head[:lt]
    amp, semi = head.rfind("&"), head.rfind(";")
    if amp > semi:
        head = head[:amp]
    # Close tags left open (the templates use only simple, unnested <b>, <i>, <code>).
    for tag in ("b", "i", "code", "u", "s"):
        if head.count(f"<{tag}>") > head.count(f"</{tag}>"):
            head += f"</{tag}>"
    return head + marker


def describe_error(texts: Texts, error: DomainError, crm: CrmSection | None = None) -> str:
    """A domain error worded for the user in their language."""
    if isinstance(error, InvalidInput):
        key = f"invalid.{error.reason}"
        if not texts.has(key):
            key = "invalid.default"
        params = {k: esc(v) for k, v in error.params.items()}
        return texts.t(key, **params) if params else texts.t(key)
    if isinstance(error, NotFound):
        if error.entity == "lead":
            return texts.t("error.not_found", entity_id=esc(error.entity_id))
        key = f"error.not_found.{error.entity}"
        return texts.t(key if texts.has(key) else "error.not_found.user")
    if isinstance(error, Forbidden):
        key = f"error.forbidden.{error.action}"
        return texts.t(key if texts.has(key) else "error.forbidden")
    if isinstance(error, DuplicateLead):
        return texts.t("error.duplicate", phone=esc(format_phone(error.phone_number)), lead_id=error.existing_lead_id)
    if isinstance(error, InvalidTransition):
        if not error.allowed:
            return texts.t("error.invalid_transition.none", current=status_label(texts, error.current))
        allowed = ", ".join(f"«{status_label(texts, s)}»" for s in error.allowed)
        return texts.t(
            "error.invalid_transition",
            current=status_label(texts, error.current),
            target=status_label(texts, error.target),
            allowed=allowed,
        )
    return texts.t("error.internal")
