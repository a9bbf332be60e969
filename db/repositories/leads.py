"""Leads, comments and history. Every call takes the acting user; the permission table is enforced here."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    Table,
    Text,
    bindparam,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from db import lead_facts, permissions
from db.assignment import AutoAssigner
from db.enums import FORWARD_MOVES, REOPEN_MOVES, HistoryAction, LeadField, LeadStatus, Role
from db.errors import DuplicateLead, Forbidden, InvalidInput, InvalidTransition, NotFound
from db.events import CommentAdded, DomainEvent, LeadCreated, LeadReassigned, LeadStatusChanged, LeadUpdated
from db.models import Comment, FollowUp, IntegrationLink, Lead, LeadHistory, MetaLeadgen, User, person_name, utcnow
from db.permissions import Actor
from db.repositories.integrations import CRM_INTEGRATIONS
from db.repositories.meta import ORIGIN_COLUMNS, origin_id, origin_row
from db.rows import CommentRow, FollowUpRow, HistoryRow, LeadCardData, LeadCardRow, PersonRow
from db.settings import CrmSection
from db.sql import insert_or_skip
from db.validation import (
    MAX_COMMENT,
    MAX_NOTES,
    MAX_REASON,
    check_budget,
    clean_name,
    clean_text,
    fold_for_search,
    normalize_phone,
    visible_text,
)

_UNSET: Any = object()


@dataclass(slots=True)
class LeadDraft:
    client_name: str
    phone_number: str
    source: str
    budget: float | None = None
    notes: str | None = None
    assigned_to: int | None = None


@dataclass(slots=True)
class LeadChanges:
    """Only the fields given (not ``_UNSET``) change; ``None`` clears an optional field."""

    client_name: Any = _UNSET
    phone_number: Any = _UNSET
    source: Any = _UNSET
    budget: Any = _UNSET
    notes: Any = _UNSET
    closing_date: Any = _UNSET

    def given(self) -> dict[LeadField, Any]:
        return {LeadField(name): value for name in LeadField if (value := getattr(self, name)) is not _UNSET}


@dataclass(slots=True, frozen=True)
class LeadFilter:
    status: LeadStatus | None = None
    source: str | None = None
    assigned_to: int | None = None
    unassigned: bool = False
    # The HTTP API's ``q`` (as ``search``) and ``updated_since`` (changed at or after, for syncing).
    text: str | None = None
    updated_since: datetime | None = None


@dataclass(slots=True, frozen=True)
class LeadRow:
    """A lead as the lists show it: a few columns read in one statement, not an ORM object with its people."""

    id: int
    client_name: str
    phone_number: str
    status: LeadStatus
    assigned_to_id: int | None
    assignee_name: str | None  # the salesperson's full name; None when unassigned


@dataclass(slots=True)
class LeadPage:
    items: list[LeadRow]
    has_more: bool


@dataclass(slots=True)
class LeadDetail:
    lead: Lead
    comments: list[Comment] = field(default_factory=list)
    history: list[LeadHistory] = field(default_factory=list)
    comments_total: int = 0
    history_total: int = 0


# Built once (the card and every action load a lead): a statement object reused keeps its cache key.
_LOAD = select(Lead).where(Lead.id == bindparam("lead_id"), Lead.deleted_at.is_(None))
# OF leads: the people are outer-joined (lazy="joined"), and PostgreSQL locks no nullable side of a join.
_LOAD_FOR_UPDATE = _LOAD.with_for_update(of=Lead)
# The card's latest comments and history rows, each with its total (a window count, taken before LIMIT;
# no limit when the caller asks for all of them).
_LATEST_COMMENTS: Select[*tuple[Any, ...]] = (
    select(Comment, func.count().over()).where(Comment.lead_id == bindparam("lead_id")).order_by(Comment.id.desc())
)
_LATEST_HISTORY: Select[*tuple[Any, ...]] = (
    select(LeadHistory, func.count().over())
    .where(LeadHistory.lead_id == bindparam("lead_id"))
    .order_by(LeadHistory.id.desc())
)


# Creating a lead: one INSERT that the partial unique index on the live phone decides, with no check
# beforehand and no SAVEPOINT: a conflicting row (the lead another transaction created first) is skipped
# and the transaction goes on. Its history rows: one INSERT, executemany.
_LEAD_TABLE = cast(Table, Lead.__table__)
_HISTORY_TABLE = cast(Table, LeadHistory.__table__)
_LIVE_BY_PHONE = select(Lead.id).where(Lead.phone_number == bindparam("phone"), Lead.deleted_at.is_(None))

_ASSIGNEE = aliased(User, name="assignee")
_CREATOR = aliased(User, name="creator")
_AUTHOR = aliased(User, name="author")

# The card as plain rows: the lead with its two people and how many comments, history rows and open
# follow-ups it has (each count a seek on its lead index), its Meta lead-ads origin if any (outer-joined:
# the row ``origin_id`` picks), its remote id in each CRM integration (a seek on the (integration, lead_id)
# index each), then the latest of each list, read only when there are any.
_COMMENTS_TOTAL = select(func.count()).select_from(Comment).where(Comment.lead_id == Lead.id).scalar_subquery()
_HISTORY_TOTAL = select(func.count()).select_from(LeadHistory).where(LeadHistory.lead_id == Lead.id).scalar_subquery()
_FOLLOWUPS_TOTAL = (
    select(func.count())
    .select_from(FollowUp)
    .where(FollowUp.lead_id == Lead.id, FollowUp.done_at.is_(None))
    .scalar_subquery()
)
_REMOTE_IDS = [
    select(IntegrationLink.remote_id)
    .where(IntegrationLink.integration == name, IntegrationLink.lead_id == Lead.id)
    .scalar_subquery()
    for name in CRM_INTEGRATIONS
]
_CARD_LEAD: Select[*tuple[Any, ...]] = (
    select(
        Lead.id,
        Lead.client_name,
        Lead.phone_number,
        Lead.status,
        Lead.source,
        Lead.budget,
        Lead.notes,
        Lead.assigned_to_id,
        Lead.created_by_id,
        Lead.created_at,
        Lead.updated_at,
        Lead.closing_date,
        Lead.refusal_reason,
        _ASSIGNEE.first_name,
        _ASSIGNEE.last_name,
        _ASSIGNEE.username,
        _CREATOR.first_name,
        _CREATOR.last_name,
        _CREATOR.username,
        *ORIGIN_COLUMNS,
        *_REMOTE_IDS,
        _COMMENTS_TOTAL,
        _HISTORY_TOTAL,
        _FOLLOWUPS_TOTAL,
    )
    .outerjoin(_ASSIGNEE, Lead.assigned_to_id == _ASSIGNEE.id)
    .outerjoin(_CREATOR, Lead.created_by_id == _CREATOR.id)
    .outerjoin(MetaLeadgen, MetaLeadgen.id == origin_id(Lead.id))
    .where(Lead.id == bindparam("lead_id"), Lead.deleted_at.is_(None))
)
_CARD_COMMENTS: Select[*tuple[Any, ...]] = (
    select(
        Comment.id,
        Comment.text,
        Comment.created_at,
        Comment.created_by_id,
        _AUTHOR.first_name,
        _AUTHOR.last_name,
        _AUTHOR.username,
    )
    .outerjoin(_AUTHOR, Comment.created_by_id == _AUTHOR.id)
    .where(Comment.lead_id == bindparam("lead_id"))
    .order_by(Comment.id.desc())
)
_CARD_HISTORY: Select[*tuple[Any, ...]] = (
    select(
        LeadHistory.id,
        LeadHistory.action,
        LeadHistory.field,
        LeadHistory.old_value,
        LeadHistory.new_value,
        LeadHistory.changed_at,
        LeadHistory.changed_by_id,
        _AUTHOR.first_name,
        _AUTHOR.last_name,
        _AUTHOR.username,
    )
    .outerjoin(_AUTHOR, LeadHistory.changed_by_id == _AUTHOR.id)
    .where(LeadHistory.lead_id == bindparam("lead_id"))
    .order_by(LeadHistory.id.desc())
)
_CARD_FOLLOWUPS: Select[*tuple[Any, ...]] = (
    select(FollowUp.id, FollowUp.text, FollowUp.due_at)
    .where(FollowUp.lead_id == bindparam("lead_id"), FollowUp.done_at.is_(None))
    .order_by(FollowUp.due_at, FollowUp.id)
)
_NO_TEXT = type_coerce(null(), Text)


@lru_cache(maxsize=32)
def _card_details(comments: int, history: int, followups: int) -> CompoundSelect:
    """The card's latest comments, latest history and first open follow-ups as one statement.

    One statement, not three, because each costs round trips to the driver (``db.engine``). Each row
    says what it is in ``kind`` ("c", "h", "f") and carries the 12 columns below, NULL where its kind has
    none; the history comes first, so its column types are the statement's. A count of 0 comments or
    history rows means all of them (``_limited``), of follow-ups none.
    """
    recent_history = _limited(_CARD_HISTORY, history).subquery()
    recent_comments = _limited(_CARD_COMMENTS, comments).subquery()
    first_followups = _CARD_FOLLOWUPS.limit(followups).subquery()
    h, c, f = recent_history.c, recent_comments.c, first_followups.c
    none = null()
    return union_all(
        select(
            literal_column("'h'"),
            h.id,
            _NO_TEXT,
            h.action,
            h.field,
            h.old_value,
            h.new_value,
            h.changed_at,
            h.changed_by_id,
            h.first_name,
            h.last_name,
            h.username,
        ),
        select(
            literal_column("'c'"),
            c.id,
            c.text,
            none,
            none,
            none,
            none,
            c.created_at,
            c.created_by_id,
            c.first_name,
            c.last_name,
            c.username,
        ),
        select(literal_column("'f'"), f.id, f.text, none, none, none, none, f.due_at, none, none, none, none),
    )


_ROW_COLUMNS = (
    Lead.id,
    Lead.client_name,
    Lead.phone_number,
    Lead.status,
    Lead.assigned_to_id,
    _ASSIGNEE.first_name,
    _ASSIGNEE.last_name,
)


_S = TypeVar("_S", bound=Select[*tuple[Any, ...]])


def _limited(stmt: _S, count: int) -> _S:
    """The latest ``count`` rows of ``stmt``, or all of them when ``count`` is 0."""
    return stmt.limit(count) if count else stmt


def _as_rows(stmt: Select[Any]) -> Select[Any]:
    """``stmt`` (a ``select(Lead)``) reading only what ``LeadRow`` holds, the salesperson's name joined."""
    rows = stmt.with_only_columns(*_ROW_COLUMNS).outerjoin_from(Lead, _ASSIGNEE, Lead.assigned_to_id == _ASSIGNEE.id)
    return cast(Select[Any], rows)


_STATUS_OF = {status.value: status for status in LeadStatus}  # a dict lookup: LeadStatus(value) costs a call


def _lead_row(row: Any) -> LeadRow:
    lead_id, name, phone, status, assignee_id, first_name, last_name = row
    return LeadRow(
        id=lead_id,
        client_name=name,
        phone_number=phone,
        status=_STATUS_OF.get(status) or LeadStatus(status),
        assigned_to_id=assignee_id,
        assignee_name=None if assignee_id is None else person_name(first_name, last_name, assignee_id),
    )


# The lists (/leads pages, /find) as prebuilt statements, one per shape: which
# conditions it has, named by the parameters bound to them (see ``_list_params``), and whether it asks for
# unassigned leads (IS NULL binds nothing). Shapes are few and bounded (seller scope, status, source,
# salesperson or unassigned, text, updated_since, cursor direction), so they are kept for good.
_ListShape = tuple[tuple[str, ...], bool]
_LIST_QUERIES: dict[_ListShape, Select[Any]] = {}


def _list_query(shape: _ListShape) -> Select[Any]:
    query = _LIST_QUERIES.get(shape)
    if query is None:
        query = _LIST_QUERIES[shape] = _build_list_query(*shape)
    return query


def _build_list_query(names: tuple[str, ...], unassigned: bool) -> Select[Any]:
    # The conditions and their order are those of ``_visible`` + ``page``: the same SQL, so the same
    # partial indexes (ix_leads_live_id, ix_leads_live_status, ix_leads_live_assignee_id, ...) answer it.
    stmt = _as_rows(select(Lead).where(Lead.deleted_at.is_(None)))
    if "actor_id" in names:
        stmt = stmt.where(Lead.assigned_to_id == bindparam("actor_id"))
    if "status" in names:
        stmt = stmt.where(Lead.status == bindparam("status"))
    if "source" in names:
        stmt = stmt.where(Lead.source == bindparam("source"))
    if unassigned:
        stmt = stmt.where(Lead.assigned_to_id.is_(None))
    elif "assigned_to" in names:
        stmt = stmt.where(Lead.assigned_to_id == bindparam("assigned_to"))
    if "name" in names:
        # ``contains(..., autoescape=True)`` takes only a literal: the value is escaped by ``_like``.
        text = Lead.search_name.contains(bindparam("name"), escape=_LIKE_ESCAPE)
        if "digits" in names:
            text = or_(text, Lead.phone_number.contains(bindparam("digits"), escape=_LIKE_ESCAPE))
        stmt = stmt.where(text)
    if "updated_since" in names:
        stmt = stmt.where(Lead.updated_at >= bindparam("updated_since"))
    if "after" in names:
        stmt = stmt.where(Lead.id > bindparam("after")).order_by(Lead.id.asc())
    else:
        if "before" in names:
            stmt = stmt.where(Lead.id < bindparam("before"))
        stmt = stmt.order_by(Lead.id.desc())
    return stmt.limit(bindparam("limit"))


class LeadRepository:
    def __init__(
        self,
        session: AsyncSession,
        crm: CrmSection,
        events: list[DomainEvent],
        assigner: AutoAssigner | None = None,
    ) -> None:
        self.session = session
        self.crm = crm
        self.events = events
        self.assigner = assigner

    # ---- reading -------------------------------------------------------------------------------------

    async def _load(self, lead_id: int, *, for_update: bool = False) -> Lead:
        stmt = _LOAD_FOR_UPDATE if for_update else _LOAD
        lead = (await self.session.execute(stmt, {"lead_id": lead_id})).scalar_one_or_none()
        if lead is None:
            raise NotFound("lead", lead_id)
        return lead

    async def get(self, actor: Actor, lead_id: int) -> Lead:
        lead = await self._load(lead_id)
        if not permissions.can_view(actor, lead):
            raise Forbidden("view", "this lead is assigned to someone else")
        return lead

    async def get_detail(self, actor: Actor, lead_id: int, *, comments: int = 5, history: int = 5) -> LeadDetail:
        """The lead with its latest ``comments`` comments and ``history`` history rows (newest last)."""
        lead = await self.get(actor, lead_id)
        detail = LeadDetail(lead=lead)
        # Each list comes with its total in the same statement (a window count is taken before LIMIT):
        # two statements for the card's lower half instead of four.
        comment_rows = (await self.session.execute(_limited(_LATEST_COMMENTS, comments), {"lead_id": lead_id})).all()
        detail.comments = [row[0] for row in reversed(comment_rows)]
        detail.comments_total = comment_rows[0][1] if comment_rows else 0
        history_rows = (await self.session.execute(_limited(_LATEST_HISTORY, history), {"lead_id": lead_id})).all()
        detail.history = [row[0] for row in reversed(history_rows)]
        detail.history_total = history_rows[0][1] if history_rows else 0
        return detail

    async def card(
        self, actor: Actor, lead_id: int, *, comments: int = 5, history: int = 5, followups: int = 3
    ) -> LeadCardData:
        """What the card shows, for anyone who may view the lead (see ``LeadCardData``)."""
        execute = self.session.execute
        row = (await execute(_CARD_LEAD, {"lead_id": lead_id})).first()
        if row is None:
            raise NotFound("lead", lead_id)
        links = len(CRM_INTEGRATIONS) + 3
        origin = len(ORIGIN_COLUMNS) + links
        comments_total, history_total, followups_total = row[-3:]
        data = LeadCardData(
            lead=LeadCardRow.of(row[:-origin]),
            comments_total=comments_total,
            history_total=history_total,
            followups_total=followups_total,
            meta=origin_row(row[-origin:-links]),
            links={
                name: str(remote_id)
                for name, remote_id in zip(CRM_INTEGRATIONS, row[-links:-3], strict=True)
                if remote_id is not None
            },
        )
        if not permissions.can_view(actor, data.lead):
            raise Forbidden("view", "this lead is assigned to someone else")
        if comments_total or history_total or (followups_total and followups):
            rows = (await execute(_card_details(comments, history, followups), {"lead_id": lead_id})).all()
            # A UNION ALL keeps no order: each kind is put in the card's order here (oldest first; the
            # follow-ups soonest first).
            for r in sorted(rows, key=lambda r: r[1]):
                kind = r[0]
                if kind == "h":
                    data.history.append(HistoryRow(r[1], r[3], r[4], r[5], r[6], r[7], PersonRow.of(*r[8:12])))
                elif kind == "c":
                    data.comments.append(CommentRow(r[1], r[2], r[7], PersonRow.of(*r[8:12])))
                else:
                    data.followups.append(FollowUpRow(r[1], r[2], r[7]))
            data.followups.sort(key=lambda f: (f.due_at, f.id))
        return data

    def visible(self, actor: Actor, flt: LeadFilter) -> Select[Any]:
        """``SELECT leads`` of the live leads ``actor`` may list, filtered by ``flt`` (the exports build on it)."""
        return self._visible(actor, flt)

    def _visible(self, actor: Actor, flt: LeadFilter) -> Select[Any]:
        stmt = select(Lead).where(Lead.deleted_at.is_(None))
        scope = _scope(actor)
        if scope is not None:
            stmt = stmt.where(Lead.assigned_to_id == scope)
        if flt.status is not None:
            stmt = stmt.where(Lead.status == flt.status)
        if flt.source is not None:
            stmt = stmt.where(Lead.source == flt.source)
        if flt.unassigned:
            stmt = stmt.where(Lead.assigned_to_id.is_(None))
        elif flt.assigned_to is not None:
            stmt = stmt.where(Lead.assigned_to_id == flt.assigned_to)
        if flt.text is not None:
            stmt = stmt.where(_text_condition(flt.text))
        if flt.updated_since is not None:
            stmt = stmt.where(Lead.updated_at >= flt.updated_since)
        return stmt

    async def page(
        self,
        actor: Actor,
        flt: LeadFilter,
        *,
        limit: int,
        before_id: int | None = None,
        after_id: int | None = None,
    ) -> LeadPage:
        """Newest first, by keyset on id: any depth costs what the first page costs.

        ``before_id`` pages forward (older leads), ``after_id`` backward (newer ones).
        """
        params = _list_params(actor, flt)
        if after_id is not None:
            params["after"] = after_id
        elif before_id is not None:
            params["before"] = before_id
        params["limit"] = limit + 1
        query = _list_query((tuple(params), flt.unassigned))
        rows = [_lead_row(row) for row in (await self.session.execute(query, params)).all()]
        has_more = len(rows) > limit
        rows = rows[:limit]
        if after_id is not None:
            rows.reverse()
        return LeadPage(items=rows, has_more=has_more)

    async def list_offset(self, actor: Actor, flt: LeadFilter, *, page: int, size: int) -> tuple[list[Lead], int]:
        """Page-numbered listing for the HTTP API: ``(items, total)``.

        COUNT and OFFSET walk O(rows) in SQLite (about 0.1 s each on a million leads). So, per filter
        and viewer, the total and keyset anchors (where a page ended: "the rows from offset N on have
        id < X") are remembered for as long as no lead changed: the stamp is max(updated_at) and
        max(id), each O(log n) on its index, and every change to a lead moves ``updated_at``. A page
        then seeks from the nearest anchor (the next page, the same page again: a few index steps)
        instead of walking from the top; ids come from the narrow index, rows are fetched after.
        """
        base = self._visible(actor, flt)
        updated = await self.session.scalar(select(func.max(Lead.updated_at)))
        newest = await self.session.scalar(select(func.max(Lead.id)))
        scope = None if permissions.can_view_all(actor) else actor.id
        key = (str(self.session.get_bind().engine.url), scope, flt, updated, newest)
        listing = _LISTINGS.get(key)
        if listing is None:
            total = int(await self.session.scalar(select(func.count()).select_from(base.subquery())) or 0)
            listing = _Listing(total)
            _LISTINGS[key] = listing
            while len(_LISTINGS) > _LISTINGS_KEPT:
                _LISTINGS.popitem(last=False)
        else:
            _LISTINGS.move_to_end(key)
        offset = (page - 1) * size
        ids_stmt = base.with_only_columns(Lead.id).order_by(Lead.id.desc()).limit(size)
        start = max((at for at in listing.anchors if at <= offset), default=0)
        if start:
            ids_stmt = ids_stmt.where(Lead.id < listing.anchors[start])
        ids = list((await self.session.scalars(ids_stmt.offset(offset - start))).all())
        if not ids:
            return [], listing.total
        if len(listing.anchors) < _ANCHORS_KEPT:
            # This page again starts at ids[0]; the next one right after ids[-1].
            listing.anchors[offset] = ids[0] + 1
            listing.anchors[offset + len(ids)] = ids[-1]
        rows = (await self.session.scalars(select(Lead).where(Lead.id.in_(ids)).order_by(Lead.id.desc()))).all()
        return list(rows), listing.total

    async def search(self, actor: Actor, text: str, *, limit: int) -> list[LeadRow]:
        params = _list_params(actor, LeadFilter(text=text))
        params["limit"] = limit
        query = _list_query((tuple(params), False))
        return [_lead_row(row) for row in (await self.session.execute(query, params)).all()]

    async def find_live_by_phone(self, phone_e164: str) -> Lead | None:
        stmt = select(Lead).where(Lead.phone_number == phone_e164, Lead.deleted_at.is_(None))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    # ---- writing -------------------------------------------------------------------------------------

    def _history(
        self,
        lead: Lead,
        actor: Actor | None,
        action: HistoryAction,
        old: object = None,
        new: object = None,
        field_name: str | None = None,
    ) -> LeadHistory:
        entry = LeadHistory(**_history_values(lead.id, actor, action, old, new, field_name))
        self.session.add(entry)
        return entry

    async def _written(self, entry: LeadHistory) -> int:
        """The id of a history row just added (events carry it)."""
        await self.session.flush()
        return entry.id

    def check_source(self, source: str) -> str:
        """The configured source ``source`` names (case aside), or InvalidInput."""
        return self._check_source(source)

    def _check_source(self, source: str) -> str:
        source = (source or "").strip()
        for known in self.crm.sources:
            if known.casefold() == source.casefold():
                return known
        raise InvalidInput(
            "source",
            "source_unknown",
            f"unknown source; one of: {', '.join(self.crm.sources)}",
            allowed=list(self.crm.sources),
        )

    async def assignee(self, user_id: int) -> User:
        """The active salesperson ``user_id``, or InvalidInput: who a lead may be assigned to."""
        user = await self.session.get(User, user_id)
        if user is None or not user.is_active or user.role not in permissions.ASSIGNABLE_ROLES:
            raise InvalidInput(
                "assigned_to", "assignee_invalid", "assignee must be an active salesperson", user_id=user_id
            )
        return user

    async def _ensure_phone_free(self, phone: str, *, except_lead: int | None = None) -> None:
        existing = await self.find_live_by_phone(phone)
        if existing is not None and existing.id != except_lead:
            raise DuplicateLead(phone, existing.id)

    async def _flush_unique(self, phone: str) -> None:
        """Flush inside a savepoint; the partial unique index turns a lost race into DuplicateLead."""
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            existing = await self.find_live_by_phone(phone)
            raise DuplicateLead(phone, existing.id if existing else 0) from None

    async def create(self, actor: Actor, draft: LeadDraft) -> Lead:
        """A new lead with its history. Unassigned, it goes to the automatic assignment (if on)."""
        lead_id, _ = await self.add(actor, draft)
        lead = await self.session.get(Lead, lead_id)
        assert lead is not None
        return lead

    async def add(self, actor: Actor, draft: LeadDraft, *, announce: bool = True) -> tuple[int, int | None]:
        """``create`` without loading the lead back: ``(lead id, salesperson id or None)``.

        ``announce=False``: no LeadCreated event, hence no notification of its own (an import sends one
        summary per salesperson instead).
        """
        if not permissions.can_create(actor):
            raise Forbidden("create")
        name = clean_name(draft.client_name)
        phone = normalize_phone(draft.phone_number, self.crm.phone_region)
        source = self._check_source(draft.source)
        budget = check_budget(draft.budget)
        notes = clean_text(draft.notes, "notes", MAX_NOTES, required=False)
        assignee = await self.assignee(draft.assigned_to) if draft.assigned_to is not None else None
        assigned_to_id = assignee.id if assignee else None
        now = utcnow()
        values = {
            "client_name": name,
            "phone_number": phone,
            "search_name": fold_for_search(name),
            "status": LeadStatus.NEW,
            "source": source,
            "budget": budget,
            "notes": notes,
            "assigned_to_id": assignee.id if assignee else None,
            "created_by_id": actor.id,
            "created_at": now,
            "updated_at": now,
            "reminder_count": 0,
            # A new lead's report facts (db.lead_facts): assigned now when it has an assignee, nothing else yet.
            "assigned_at": now if assignee else None,
            "first_response_at": None,
            "ever_in_work": False,
        }
        # Pending changes are flushed first (autoflush): a lead soft-deleted earlier in this unit of work
        # has given its phone back by the time it is taken again.
        insert_lead = insert_or_skip(
            self.session, _LEAD_TABLE, [Lead.phone_number], Lead.deleted_at.is_(None)
        ).returning(Lead.id)
        lead_id = await self.session.scalar(insert_lead, values)
        if lead_id is None:
            existing = await self.session.scalar(_LIVE_BY_PHONE, {"phone": phone})
            raise DuplicateLead(phone, existing or 0)
        history = [_history_values(lead_id, actor, HistoryAction.CREATED, None, LeadStatus.NEW.value, at=now)]
        if assignee is not None:
            history.append(_history_values(lead_id, actor, HistoryAction.ASSIGNED, None, assignee.full_name, at=now))
        elif self.assigner is not None and self.assigner.enabled:
            # Picked once the lead exists, so a duplicate phone never moves the turn on. The history row
            # has no author: the system assigned it ("assigned automatically").
            picked = await self.assigner.pick(source, now=now)
            if picked is not None:
                await self.session.execute(
                    update(Lead)
                    .where(Lead.id == lead_id)
                    .values(assigned_to_id=picked.id, assigned_at=now)
                    .execution_options(synchronize_session=False)
                )
                history.append(_history_values(lead_id, None, HistoryAction.ASSIGNED, None, picked.full_name, at=now))
                assigned_to_id = picked.id
        history_ids = list(await self.session.scalars(insert(_HISTORY_TABLE).returning(LeadHistory.id), history))
        if announce:
            self.events.append(LeadCreated(lead_id, actor.id, history_ids[0]))
        return lead_id, assigned_to_id

    async def update(self, actor: Actor, lead_id: int, changes: LeadChanges) -> Lead:
        lead = await self._load(lead_id, for_update=True)
        if not permissions.can_update(actor, lead):
            raise Forbidden("update")
        given = changes.given()
        cleaned: dict[LeadField, Any] = {}
        for name, value in given.items():
            if name is LeadField.CLIENT_NAME:
                cleaned[name] = clean_name(value)
            elif name is LeadField.PHONE_NUMBER:
                cleaned[name] = normalize_phone(value, self.crm.phone_region)
            elif name is LeadField.SOURCE:
                cleaned[name] = self._check_source(value)
            elif name is LeadField.BUDGET:
                cleaned[name] = check_budget(value)
            elif name is LeadField.NOTES:
                cleaned[name] = clean_text(value, "notes", MAX_NOTES, required=False)
            elif name is LeadField.CLOSING_DATE:
                if value is not None and not isinstance(value, date):
                    raise InvalidInput("closing_date", "date_invalid", "closing_date must be a date")
                cleaned[name] = value
        phone = cleaned.get(LeadField.PHONE_NUMBER)
        if phone is not None and phone != lead.phone_number:
            await self._ensure_phone_free(phone, except_lead=lead.id)
        changed: list[str] = []
        entry: LeadHistory | None = None
        for name, value in cleaned.items():
            old = getattr(lead, name.value)
            if old == value:
                continue
            setattr(lead, name.value, value)
            entry = self._history(lead, actor, HistoryAction.UPDATED, _fmt(old), _fmt(value), name.value)
            changed.append(name.value)
        if changed and entry is not None:
            lead.updated_at = utcnow()
            if phone is not None:
                await self._flush_unique(phone)
            history_id = await self._written(entry)
            self.events.append(LeadUpdated(lead.id, actor.id, tuple(changed), history_id))
        return lead

    def allowed_moves(self, actor: Actor, lead: Lead | LeadCardRow) -> list[LeadStatus]:
        if not permissions.can_update(actor, lead):
            return []
        moves = set(FORWARD_MOVES[lead.status])
        if permissions.can_reopen(actor):
            moves |= REOPEN_MOVES.get(lead.status, frozenset())
        return sorted(moves, key=lambda s: s.code)

    async def change_status(
        self, actor: Actor, lead_id: int, new_status: LeadStatus, *, reason: str | None = None
    ) -> Lead:
        lead = await self._load(lead_id, for_update=True)
        if not permissions.can_update(actor, lead):
            raise Forbidden("update")
        old_status = LeadStatus(lead.status)
        allowed = self.allowed_moves(actor, lead)
        if new_status not in allowed:
            if new_status in REOPEN_MOVES.get(old_status, frozenset()):
                raise Forbidden("reopen", "only an admin or the head of sales may reopen a lead")
            raise InvalidTransition(old_status, new_status, allowed)
        if new_status == LeadStatus.REFUSED:
            lead.refusal_reason = clean_text(reason, "reason", MAX_REASON)
        elif old_status == LeadStatus.REFUSED:
            lead.refusal_reason = None
        if new_status == LeadStatus.CLOSED and lead.closing_date is None:
            lead.closing_date = utcnow().astimezone(self.crm.tz).date()
        lead.status = new_status
        lead.updated_at = utcnow()
        if new_status != LeadStatus.NEW:
            lead.next_reminder_at = None
        if new_status == LeadStatus.IN_WORK:
            lead.ever_in_work = True
        entry = self._history(lead, actor, HistoryAction.STATUS_CHANGED, old_status.value, new_status.value)
        history_id = await self._written(entry)
        await lead_facts.note_answer(self.session, lead.id, actor.id, entry.changed_at)
        self.events.append(LeadStatusChanged(lead.id, actor.id, old_status, new_status, history_id))
        return lead

    async def assign(self, actor: Actor, lead_id: int, assignee_id: int) -> Lead:
        if not permissions.can_assign(actor):
            raise Forbidden("assign")
        lead = await self._load(lead_id, for_update=True)
        assignee = await self.assignee(assignee_id)
        if lead.assigned_to_id == assignee.id:
            raise InvalidInput("assigned_to", "already_assigned", "the lead is already assigned to this person")
        old = lead.assigned_to
        old_id = lead.assigned_to_id
        lead.assigned_to_id = assignee.id
        lead.assigned_to = assignee
        lead.updated_at = utcnow()
        entry = self._history(lead, actor, HistoryAction.ASSIGNED, old.full_name if old else None, assignee.full_name)
        history_id = await self._written(entry)
        await lead_facts.refresh(self.session, [lead.id])
        self.events.append(LeadReassigned(lead.id, actor.id, old_id, assignee.id, history_id))
        return lead

    async def assign_waiting(self, now: datetime, *, limit: int = 100) -> int:
        """Automatic assignment of new leads left unassigned (created outside working hours, or when
        nobody was available), oldest first; how many were assigned. Nothing in manual mode or outside
        working hours. Each is in the history without an author and announced as a reassignment."""
        if self.assigner is None or not self.assigner.enabled:
            return 0
        waiting = (
            await self.session.execute(
                select(Lead.id, Lead.source)
                .where(Lead.deleted_at.is_(None), Lead.assigned_to_id.is_(None), Lead.status == LeadStatus.NEW)
                .order_by(Lead.id)
                .limit(limit)
            )
        ).all()
        assigned = 0
        for lead_id, source in waiting:
            picked = await self.assigner.pick(source, now=now)
            if picked is None:
                break
            result = await self.session.execute(
                update(Lead)
                .where(Lead.id == lead_id, Lead.assigned_to_id.is_(None), Lead.deleted_at.is_(None))
                .values(assigned_to_id=picked.id, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                continue
            values = _history_values(lead_id, None, HistoryAction.ASSIGNED, None, picked.full_name, at=now)
            history_id = await self.session.scalar(insert(_HISTORY_TABLE).returning(LeadHistory.id), values)
            assert history_id is not None
            await lead_facts.refresh(self.session, [lead_id])
            self.events.append(LeadReassigned(lead_id, None, None, picked.id, history_id))
            assigned += 1
        return assigned

    async def take(self, actor: Actor, lead_id: int) -> Lead:
        """A salesperson claims an unassigned lead; one conditional UPDATE makes two presses give one owner."""
        lead = await self._load(lead_id)
        if actor.role != Role.SELLER:
            raise Forbidden("take")
        if lead.assigned_to_id is not None:
            if lead.assigned_to_id == actor.id:
                return lead
            raise Forbidden("take", "the lead has already been taken")
        result = await self.session.execute(
            update(Lead)
            .where(Lead.id == lead_id, Lead.assigned_to_id.is_(None), Lead.deleted_at.is_(None))
            .values(assigned_to_id=actor.id, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise Forbidden("take", "the lead has already been taken")
        await self.session.refresh(lead)
        entry = self._history(lead, actor, HistoryAction.ASSIGNED, None, actor.full_name)
        history_id = await self._written(entry)
        await lead_facts.refresh(self.session, [lead.id])
        self.events.append(LeadReassigned(lead.id, actor.id, None, actor.id, history_id))
        return lead

    async def add_comment(self, actor: Actor, lead_id: int, text: str) -> Comment:
        lead = await self._load(lead_id)
        if not permissions.can_comment(actor, lead):
            raise Forbidden("comment")
        body = clean_text(text, "text", MAX_COMMENT)
        assert body is not None
        comment = Comment(lead_id=lead.id, text=body, created_by_id=actor.id, created_at=utcnow())
        self.session.add(comment)
        lead.updated_at = utcnow()
        await self.session.flush()
        await lead_facts.note_answer(self.session, lead.id, actor.id, comment.created_at)
        await self.session.refresh(comment, ["created_by"])
        self.events.append(CommentAdded(lead.id, actor.id, comment.id))
        return comment

    async def delete(self, actor: Actor, lead_id: int) -> Lead:
        if not permissions.can_delete(actor):
            raise Forbidden("delete")
        lead = await self._load(lead_id, for_update=True)
        lead.deleted_at = utcnow()
        lead.deleted_by_id = actor.id
        lead.updated_at = lead.deleted_at
        self._history(lead, actor, HistoryAction.DELETED, lead.status, None)
        return lead

    async def comments(
        self, actor: Actor, lead_id: int, *, limit: int = 50, before_id: int | None = None
    ) -> list[Comment]:
        await self.get(actor, lead_id)
        stmt = select(Comment).where(Comment.lead_id == lead_id)
        if before_id is not None:
            stmt = stmt.where(Comment.id < before_id)
        rows = await self.session.scalars(stmt.order_by(Comment.id.desc()).limit(limit))
        return list(rows.all())

    async def history(self, actor: Actor, lead_id: int) -> list[LeadHistory]:
        await self.get(actor, lead_id)
        rows = await self.session.scalars(
            select(LeadHistory).where(LeadHistory.lead_id == lead_id).order_by(LeadHistory.id)
        )
        return list(rows.all())


@dataclass(slots=True)
class _Listing:
    total: int
    # offset -> id: the rows from that offset on (newest first) are those with a smaller id.
    anchors: dict[int, int] = field(default_factory=dict)


# What list_offset remembers, per (database, viewer, filter, stamp of the last change); least recently
# used first out. A stale entry is never used: any change to a lead gives a new stamp, hence a new key.
_LISTINGS: OrderedDict[tuple[Any, ...], _Listing] = OrderedDict()
_LISTINGS_KEPT = 256
_ANCHORS_KEPT = 256


def _search_terms(text: str) -> tuple[str, str | None]:
    """A name fragment (folded) and, given 3+ digits, a fragment of the phone; under 2 characters is refused.

    The text follows the rule of every typed text (``visible_text``): a control character or nothing
    visible is refused, as at the HTTP edge's ``q`` (a NUL cut SQLite's pattern short, so a search for it
    matched every lead the caller may see; PostgreSQL refuses a NUL in a parameter outright).
    """
    query = " ".join((text or "").split())
    if query:
        visible_text(text, "q")  # as typed: str.split() would drop some control characters (U+001C-U+001F)
    if len(query) < 2:
        raise InvalidInput("q", "query_too_short", "search text must have at least 2 characters")
    digits = "".join(ch for ch in query if ch.isascii() and ch.isdigit())
    # Compared in folded form on both sides: SQLite's lower()/LIKE leave Cyrillic case alone.
    return fold_for_search(query), digits if len(digits) >= 3 else None


def _text_condition(text: str) -> ColumnElement[bool]:
    name, digits = _search_terms(text)
    conditions = [Lead.search_name.contains(name, autoescape=True)]
    if digits is not None:
        conditions.append(Lead.phone_number.contains(digits, autoescape=True))
    return or_(*conditions)


_LIKE_ESCAPE = "/"


def _like(value: str) -> str:
    """``value`` matched literally inside LIKE (what ``contains(..., autoescape=True)`` does to a literal)."""
    escape = _LIKE_ESCAPE
    return value.replace(escape, escape * 2).replace("%", escape + "%").replace("_", escape + "_")


def _scope(actor: Actor) -> int | None:
    """Whose leads ``actor`` may list: None for everyone's, else their own id; others may not list at all."""
    if permissions.can_view_all(actor):
        return None
    if actor.role != Role.SELLER:
        raise Forbidden("view")
    return actor.id


def _list_params(actor: Actor, flt: LeadFilter) -> dict[str, Any]:
    """The values of ``flt`` for a list statement, in the order ``_build_list_query`` applies them: their
    names (with ``flt.unassigned``) are the statement's shape."""
    params: dict[str, Any] = {}
    scope = _scope(actor)
    if scope is not None:
        params["actor_id"] = scope
    if flt.status is not None:
        params["status"] = flt.status
    if flt.source is not None:
        params["source"] = flt.source
    if flt.assigned_to is not None and not flt.unassigned:
        params["assigned_to"] = flt.assigned_to
    if flt.text is not None:
        name, digits = _search_terms(flt.text)
        params["name"] = _like(name)
        if digits is not None:
            params["digits"] = _like(digits)
    if flt.updated_since is not None:
        params["updated_since"] = flt.updated_since
    return params


def _history_values(
    lead_id: int,
    actor: Actor | None,
    action: HistoryAction,
    old: object = None,
    new: object = None,
    field_name: str | None = None,
    *,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The columns of one history row."""
    return {
        "lead_id": lead_id,
        "action": action.value,
        "field": field_name,
        "old_value": None if old is None else str(old),
        "new_value": None if new is None else str(new),
        "changed_by_id": actor.id if actor else None,
        "changed_at": at or utcnow(),
    }


def _fmt(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else str(int(value))
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)
