"""The lead card and its "more" pages as Telegram HTML, always within the 4096-character limit.

Everything a user typed (names, notes, comments, reasons, history values) is escaped here; the
templates in bot/texts are trusted HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from bot.config import CrmSection
from bot.presentation.views import (
    MESSAGE_LIMIT,
    cut,
    esc,
    format_dt,
    format_money,
    format_phone_html,
    status_label,
    user_label,
)
from bot.texts import Texts
from db.enums import HistoryAction, LeadStatus
from db.models import Comment, LeadHistory, User, utcnow
from db.rows import CommentRow, FollowUpRow, HistoryRow, LeadCardData, LeadCardRow, MetaOriginRow, PersonRow

_STATUS_VALUES = frozenset(status.value for status in LeadStatus)

# A comment on the card is a preview, shorter when the card is crowded; the "more" pages show it whole.
PREVIEW_STEPS = (300, 150, 60)
# Old and new values in a history line (notes can be 2000 characters long).
HISTORY_VALUE_CHARS = 80
# Rows a "more" page looks at; the page then takes as many as fit into one message.
PAGE_ROWS = 10
# A single row on a "more" page is cut to this, so a page always holds at least one row whole or cut.
PAGE_ROW_CHARS = 3500


@dataclass(slots=True, frozen=True)
class Card:
    text: str
    more_comments: bool
    more_history: bool


@dataclass(slots=True, frozen=True)
class Page:
    text: str
    # The id to page on from (the oldest row shown) when older rows exist, else None.
    next_before: int | None


def shorten(value: object, limit: int) -> str:
    """Plain text cut to ``limit`` characters (cut before escaping, so no entity is ever split)."""
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_date(value: date | None) -> str:
    return value.strftime("%d.%m.%Y") if value else "—"


def _who(user: User | PersonRow | None, texts: Texts) -> str:
    return esc(user.full_name) if user is not None else texts.t("card.system")


def comment_line(comment: Comment | CommentRow, texts: Texts, tz: ZoneInfo, limit: int) -> str:
    body = comment.text if len(comment.text) <= limit else comment.text[: limit - 1] + "…"
    return texts.t(
        "card.entry", when=format_dt(comment.created_at, tz), who=_who(comment.created_by, texts), what=esc(body)
    )


def _history_value(texts: Texts, value: str | None, *, status: bool = False) -> str:
    if value is None or value == "":
        return texts.t("common.none")
    if status and value in _STATUS_VALUES:
        return status_label(texts, value)
    return esc(shorten(value, HISTORY_VALUE_CHARS))


def history_line(row: LeadHistory | HistoryRow, texts: Texts, tz: ZoneInfo) -> str:
    action = row.action
    is_status = action == HistoryAction.STATUS_CHANGED
    old = _history_value(texts, row.old_value, status=is_status)
    new = _history_value(texts, row.new_value, status=is_status)
    if action == HistoryAction.ASSIGNED and row.changed_by is None:
        what = texts.t("card.h.assigned_auto", new=new)  # automatic assignment: no author
    elif action == HistoryAction.UPDATED:
        field_key = f"card.field.{row.field}"
        field = texts.t(field_key) if texts.has(field_key) else esc(row.field or "")
        what = texts.t("card.h.updated", field=field, old=old, new=new)
    elif texts.has(f"card.h.{action}"):
        what = texts.t(f"card.h.{action}", old=old, new=new)
    else:
        what = texts.t("card.h.other", action=esc(action), old=old, new=new)
    return texts.t("card.entry", when=format_dt(row.changed_at, tz), who=_who(row.changed_by, texts), what=what)


def card_fields(lead: LeadCardRow, texts: Texts, crm: CrmSection) -> list[str]:
    """Every detail field of the reference, one line each."""
    tz = crm.tz
    lines = [
        texts.t("card.title", lead_id=lead.id),
        texts.t("card.client", value=esc(lead.client_name)),
        texts.t("card.phone", value=format_phone_html(lead.phone_number)),
        texts.t("card.status", value=status_label(texts, lead.status)),
        texts.t("card.source", value=esc(lead.source)),
        texts.t("card.budget", value=format_money(lead.budget, crm.currency)),
        texts.t("card.assignee", value=user_label(lead.assigned_to, texts)),
        texts.t("card.creator", value=user_label(lead.created_by, texts)),
        texts.t("card.created_at", value=format_dt(lead.created_at, tz)),
        texts.t("card.updated_at", value=format_dt(lead.updated_at, tz)),
        texts.t("card.closing_date", value=format_date(lead.closing_date)),
    ]
    if lead.status == LeadStatus.REFUSED:
        lines.append(texts.t("card.refusal_reason", value=esc(lead.refusal_reason or texts.t("common.none"))))
    lines.append(texts.t("card.notes", value=esc(lead.notes) if lead.notes else texts.t("common.none")))
    return lines


def meta_line(meta: MetaOriginRow, texts: Texts) -> str:
    """Where a Meta lead-ads lead came from: the form, the ad and the leadgen id, as Meta sent them."""
    unknown = texts.t("common.none")
    return texts.t(
        "card.meta",
        form=esc(meta.form_id) if meta.form_id else unknown,
        ad=esc(meta.ad_id) if meta.ad_id else unknown,
        leadgen=esc(meta.leadgen_id),
    )


def links_line(links: dict[str, str], texts: Texts) -> str:
    """The lead's ids in the remote CRMs it is linked to: ``amoCRM: #30000001 · Bitrix24: #77``."""
    return " · ".join(
        texts.t("card.link", name=texts.t(f"integration.{name}"), remote_id=esc(remote_id))
        for name, remote_id in links.items()
    )


def followup_lines(followups: Sequence[FollowUpRow], total: int, texts: Texts, tz: ZoneInfo) -> list[str]:
    """The card's open follow-ups, soonest first; an overdue one is marked."""
    if not followups:
        return []
    now = utcnow()
    lines = [texts.t("card.followups", total=total)]
    for followup in followups:
        key = "card.followup.overdue" if followup.due_at <= now else "card.followup"
        lines.append(texts.t(key, due=format_dt(followup.due_at, tz), text=esc(shorten(followup.text, 120))))
    return lines


def render_card(detail: LeadCardData, texts: Texts, crm: CrmSection, *, notice: str | None = None) -> Card:
    """The card: ``notice`` (what just happened) on top, the fields, latest comments and history.

    When it would not fit into one message, comment previews get shorter, then the oldest comment
    and history lines go; whatever is left out is one "more" button away.
    """
    tz = crm.tz
    head: list[str] = [notice, ""] if notice else []
    head += card_fields(detail.lead, texts, crm)
    if detail.meta is not None:
        head.append(meta_line(detail.meta, texts))
    if detail.links:
        head.append(links_line(detail.links, texts))
    if detail.followups:
        head += ["", *followup_lines(detail.followups, detail.followups_total, texts, tz)]
    comments = list(detail.comments)
    history = [history_line(h, texts, tz) for h in detail.history]
    for preview in PREVIEW_STEPS:
        text = _assemble(head, comments, history, detail, texts, tz, preview)
        if len(text) <= MESSAGE_LIMIT:
            break
    while len(text) > MESSAGE_LIMIT and (comments or history):
        # Drop the oldest line of the longer section; the newest stay in view.
        if comments and (len(comments) >= len(history) or not history):
            comments.pop(0)
        else:
            history.pop(0)
        text = _assemble(head, comments, history, detail, texts, tz, preview)
    shown_whole = all(len(c.text) <= preview for c in comments)
    return Card(
        text=cut(text),
        more_comments=len(comments) < detail.comments_total or not shown_whole,
        more_history=len(history) < detail.history_total,
    )


def _assemble(
    head: list[str],
    comments: list[CommentRow],
    history: list[str],
    detail: LeadCardData,
    texts: Texts,
    tz: ZoneInfo,
    preview: int,
) -> str:
    parts = [*head, ""]
    if comments:
        parts.append(texts.t("card.comments", shown=len(comments), total=detail.comments_total))
        parts += [comment_line(c, texts, tz, preview) for c in comments]
    elif detail.comments_total == 0:
        parts.append(texts.t("card.comments.none"))
    if history:
        parts.append("")
        parts.append(texts.t("card.history", shown=len(history), total=detail.history_total))
        parts += history
    return "\n".join(parts)


def _page(header: str, rows: Sequence[tuple[int, str]], has_older: bool, empty: str) -> Page:
    """As many rows (newest first) as fit into one message; the rest is for the next page."""
    if not rows:
        return Page(text=f"{header}\n\n{empty}", next_before=None)
    text = header + "\n"
    shown = 0
    for _, line in rows:
        candidate = f"{text}\n{line}"
        if len(candidate) > MESSAGE_LIMIT:
            break
        text = candidate
        shown += 1
    if shown == 0:  # cannot happen with PAGE_ROW_CHARS, but a page must never be empty or too long
        text, shown = cut(f"{text}\n{rows[0][1]}"), 1
    more = shown < len(rows) or has_older
    return Page(text=text, next_before=rows[shown - 1][0] if more else None)


def render_comments_page(
    lead_id: int, comments: Sequence[Comment], has_older: bool, texts: Texts, crm: CrmSection
) -> Page:
    """``comments`` newest first; ``has_older`` when rows beyond them exist."""
    rows = [(c.id, comment_line(c, texts, crm.tz, PAGE_ROW_CHARS)) for c in comments]
    return _page(texts.t("card.more.comments", lead_id=lead_id), rows, has_older, texts.t("card.more.empty"))


def render_history_page(
    lead_id: int, history: Sequence[LeadHistory], has_older: bool, texts: Texts, crm: CrmSection
) -> Page:
    """``history`` newest first; ``has_older`` when rows beyond them exist."""
    rows = [(h.id, history_line(h, texts, crm.tz)) for h in history]
    return _page(texts.t("card.more.history", lead_id=lead_id), rows, has_older, texts.t("card.more.empty"))
