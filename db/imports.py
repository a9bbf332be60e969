"""Importing leads from a spreadsheet: a preview first, then the import in batches, with every row's outcome.

``LeadImporter.preview`` reads the file (``db.spreadsheets``) and checks every row as creating a lead
would (name, phone, source, budget, notes, salesperson), then finds the duplicates: of a live lead
(by the normalized phone) or of an earlier row of the file. Nothing is written. A file that cannot be
read, is too large or has too many rows raises ``InvalidInput`` (field ``file``) before anything else.

``LeadImporter.run`` previews again (the database may have moved on since the preview was shown), then
creates the rows through ``LeadRepository.add`` (``create``'s path: validation, history ``created`` by the importer,
automatic assignment when it is on), ``BATCH`` rows per unit of work and transaction. Leads created
by an import announce nothing one by one: instead each salesperson who got leads receives one summary
message, written to the outbox in the last batch's transaction with the key ``import:<id>:<user id>``
(so it is queued once). The summary's wording is the interface's: ``run`` takes a ``Summary`` callable
that returns the outbox payload (``db`` imports no interface). A row that became a duplicate since the
preview (another lead with its phone arrived) is reported as such and the batch goes on.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from db import permissions
from db.errors import DuplicateLead, Forbidden, InvalidInput
from db.models import Lead, User
from db.permissions import Actor
from db.repositories.leads import LeadDraft, LeadRepository
from db.repositories.outbox import OutboxRow
from db.spreadsheets import Column, Sheet, SheetRow, read_sheet
from db.uow import UnitOfWork, UnitOfWorkFactory
from db.validation import MAX_NOTES, check_budget, clean_name, clean_text, normalize_phone, parse_budget

BATCH = 500
KIND_IMPORT_SUMMARY = "import_summary"
_PHONES_PER_QUERY = 500

# What a salesperson is told about the leads an import gave them: (the salesperson, how many leads,
# the importer) -> the outbox payload ({"text": ..., "reply_markup": ...}).
Summary = Callable[[User, int, Actor], dict[str, Any]]


class Outcome(StrEnum):
    CREATE = "create"  # the preview: will be created
    CREATED = "created"
    DUPLICATE = "duplicate"  # a live lead has this phone
    DUPLICATE_IN_FILE = "duplicate_in_file"  # an earlier row of the file has this phone
    INVALID = "invalid"


@dataclass(slots=True)
class RowResult:
    number: int
    client_name: str
    phone_number: str
    outcome: Outcome
    column: Column | None = None
    reason: str | None = None  # a stable key, as InvalidInput's (``phone_invalid``, ``source_unknown``…)
    message: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the InvalidInput's, for its wording
    lead_id: int | None = None  # the lead created, or the live lead it duplicates
    duplicate_of_row: int | None = None
    assigned_to_id: int | None = None
    draft: LeadDraft | None = field(default=None, repr=False)


@dataclass(slots=True)
class ImportReport:
    rows: list[RowResult]
    format: str
    encoding: str | None = None
    ignored_headers: list[str] = field(default_factory=list)
    import_id: str | None = None  # set once run

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for row in self.rows if row.outcome in outcomes)

    @property
    def to_create(self) -> int:
        return self.count(Outcome.CREATE)

    @property
    def created(self) -> int:
        return self.count(Outcome.CREATED)

    @property
    def duplicates(self) -> int:
        return self.count(Outcome.DUPLICATE, Outcome.DUPLICATE_IN_FILE)

    @property
    def invalid(self) -> int:
        return self.count(Outcome.INVALID)

    def invalid_rows(self) -> list[RowResult]:
        return [row for row in self.rows if row.outcome == Outcome.INVALID]


def check_may_import(actor: Actor) -> None:
    if not permissions.can_create(actor):
        raise Forbidden("import", "only an admin, the head of sales or a sales manager may import leads")


class LeadImporter:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self.uow_factory = uow_factory

    async def preview(self, actor: Actor, data: bytes, filename: str | None = None) -> ImportReport:
        """What importing the file would do; writes nothing."""
        check_may_import(actor)
        sheet = read_sheet(data, filename)  # before any unit of work: a bad file costs no connection
        async with self.uow_factory(read_only=True) as uow:
            return await _check(uow, sheet)

    async def run(
        self, actor: Actor, data: bytes, filename: str | None = None, *, summary: Summary | None = None
    ) -> ImportReport:
        """Import the file: ``BATCH`` rows per transaction; the report gives every row's outcome."""
        report = await self.preview(actor, data, filename)
        report.import_id = uuid.uuid4().hex
        pending = [row for row in report.rows if row.outcome == Outcome.CREATE]
        received: Counter[int] = Counter()
        batches = [pending[i : i + BATCH] for i in range(0, len(pending), BATCH)]
        for index, batch in enumerate(batches):
            async with self.uow_factory() as uow:
                for row in batch:
                    await _create(uow.leads, actor, row)
                    if row.outcome == Outcome.CREATED and row.assigned_to_id is not None:
                        received[row.assigned_to_id] += 1
                if index == len(batches) - 1 and summary is not None:
                    await _summaries(uow, report.import_id, received, actor, summary)
                await uow.commit()
        return report


async def _create(leads: LeadRepository, actor: Actor, row: RowResult) -> None:
    assert row.draft is not None
    try:
        lead_id, assigned_to_id = await leads.add(actor, row.draft, announce=False)
    except DuplicateLead as exc:
        row.outcome, row.lead_id = Outcome.DUPLICATE, exc.existing_lead_id
    except InvalidInput as exc:  # e.g. the salesperson was deactivated since the preview
        row.outcome, row.reason, row.message, row.params = Outcome.INVALID, exc.reason, exc.message, exc.params
        row.column = _COLUMN_OF.get(exc.field)
    else:
        row.outcome, row.lead_id, row.assigned_to_id = Outcome.CREATED, lead_id, assigned_to_id


async def _summaries(uow: UnitOfWork, import_id: str, received: Counter[int], actor: Actor, summary: Summary) -> None:
    rows = []
    for user_id, count in sorted(received.items()):
        user = await uow.session.get(User, user_id)
        if user is None or not user.is_active or user.id == actor.id:
            continue
        rows.append(
            OutboxRow(
                key=f"import:{import_id}:{user.id}",
                chat_id=user.telegram_id,
                user_id=user.id,
                kind=KIND_IMPORT_SUMMARY,
                payload=summary(user, count, actor),
            )
        )
    await uow.outbox.enqueue_many(rows)


_COLUMN_OF = {
    "client_name": Column.NAME,
    "phone_number": Column.PHONE,
    "phone": Column.PHONE,
    "source": Column.SOURCE,
    "budget": Column.BUDGET,
    "notes": Column.NOTES,
    "assigned_to": Column.SALESPERSON,
    "salesperson": Column.SALESPERSON,
}


async def _check(uow: UnitOfWork, sheet: Sheet) -> ImportReport:
    people = await _salespeople(uow)
    report = ImportReport(rows=[], format=sheet.format, encoding=sheet.encoding, ignored_headers=sheet.ignored_headers)
    for raw in sheet.rows:
        report.rows.append(_check_row(uow.leads, raw, people))
    phones = [row.phone_number for row in report.rows if row.outcome == Outcome.CREATE]
    existing = await _live_phones(uow, phones)
    first_row: dict[str, int] = {}
    for row in report.rows:
        if row.outcome != Outcome.CREATE:
            continue
        if row.phone_number in existing:
            row.outcome, row.lead_id = Outcome.DUPLICATE, existing[row.phone_number]
        elif row.phone_number in first_row:
            row.outcome, row.duplicate_of_row = Outcome.DUPLICATE_IN_FILE, first_row[row.phone_number]
        else:
            first_row[row.phone_number] = row.number
    return report


def _check_row(leads: LeadRepository, raw: SheetRow, people: _People) -> RowResult:
    values = raw.values
    row = RowResult(raw.number, values.get(Column.NAME, ""), values.get(Column.PHONE, ""), Outcome.INVALID)
    column = Column.NAME
    try:
        name = clean_name(values.get(Column.NAME))
        column = Column.PHONE
        phone = normalize_phone(values.get(Column.PHONE, ""), leads.crm.phone_region)
        column = Column.SOURCE
        source = values.get(Column.SOURCE, "")
        if not source:
            raise InvalidInput("source", "source_required", "the source is empty")
        source = leads.check_source(source)
        column = Column.BUDGET
        budget_text = values.get(Column.BUDGET, "")
        budget = check_budget(parse_budget(budget_text)) if budget_text else None
        column = Column.NOTES
        notes = clean_text(values.get(Column.NOTES), "notes", MAX_NOTES, required=False)
        column = Column.SALESPERSON
        assignee = people.find(values.get(Column.SALESPERSON, ""))
    except InvalidInput as exc:
        row.column, row.reason, row.message, row.params = column, exc.reason, exc.message, exc.params
        return row
    row.client_name, row.phone_number, row.outcome = name, phone, Outcome.CREATE
    row.draft = LeadDraft(name, phone, source, budget, notes, assignee.id if assignee else None)
    return row


@dataclass(slots=True)
class _People:
    """The active salespeople, found by Telegram id, @username or full name."""

    users: Sequence[User]

    def find(self, text: str) -> User | None:
        text = " ".join(text.split())
        if not text:
            return None
        wanted = text.casefold()
        for user in self.users:
            if (
                wanted == str(user.telegram_id)
                or (user.username and wanted.lstrip("@") == user.username.casefold())
                or wanted == user.full_name.casefold()
            ):
                return user
        raise InvalidInput(
            "salesperson",
            "salesperson_unknown",
            "no active salesperson has this name, @username or Telegram id",
            value=text,
        )


async def _salespeople(uow: UnitOfWork) -> _People:
    rows = await uow.session.scalars(
        select(User).where(
            User.is_active.is_(True), User.role.in_([role.value for role in permissions.ASSIGNABLE_ROLES])
        )
    )
    return _People(list(rows.all()))


async def _live_phones(uow: UnitOfWork, phones: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    unique = sorted(set(phones))
    for i in range(0, len(unique), _PHONES_PER_QUERY):
        chunk = unique[i : i + _PHONES_PER_QUERY]
        rows = await uow.session.execute(
            select(Lead.phone_number, Lead.id).where(Lead.phone_number.in_(chunk), Lead.deleted_at.is_(None))
        )
        found.update({phone: lead_id for phone, lead_id in rows.all()})
    return found
