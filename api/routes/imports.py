"""``POST /api/leads/import``: a spreadsheet of leads, previewed (``?dry_run=true``) or imported (``db.imports``).

The file comes as the raw body (``Content-Type: text/csv`` or the .xlsx type; the format is recognised
from the content) or as the ``file`` field of a ``multipart/form-data`` form. The route class lets a
body as large as the largest file accepted in (``api.edge.UploadRoute``); the token is checked first,
as for every bearer route. The import runs in batches of its own transactions (``LeadImporter``), so
the route takes the unit-of-work factory, not a request unit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from api.deps import CurrentUser, SettingsDep, get_uow_factory
from api.edge import UploadRoute
from api.errors import responses
from bot import import_files
from db.errors import InvalidInput
from db.imports import ImportReport, LeadImporter, Outcome, RowResult
from db.spreadsheets import MAX_FILE_BYTES, MAX_ROWS, XLSX_TYPE
from db.uow import UnitOfWorkFactory

router = APIRouter(prefix="/api/leads", tags=["leads"], route_class=UploadRoute, responses=responses(408, 429, 503))

_FILE_FIELD = "file"


class ImportRowOut(BaseModel):
    row: int = Field(description="The row's number in the spreadsheet (the header is row 1)")
    outcome: Outcome = Field(description="create (dry run), created, duplicate, duplicate_in_file or invalid")
    client_name: str
    phone_number: str = Field(description="E.164 when the phone was valid, else as written")
    column: str | None = Field(description="The column at fault (invalid rows)")
    reason: str | None = Field(description="A stable key, e.g. phone_invalid, source_unknown (invalid rows)")
    message: str | None
    lead_id: int | None = Field(description="The lead created, or the live lead a duplicate repeats")
    duplicate_of_row: int | None = Field(description="The earlier row a duplicate_in_file repeats")

    @classmethod
    def of(cls, row: RowResult) -> ImportRowOut:
        return cls(
            row=row.number,
            outcome=row.outcome,
            client_name=row.client_name,
            phone_number=row.phone_number,
            column=row.column.value if row.column else None,
            reason=row.reason,
            message=row.message,
            lead_id=row.lead_id,
            duplicate_of_row=row.duplicate_of_row,
        )


class ImportOut(BaseModel):
    dry_run: bool
    format: str = Field(description="xlsx or csv")
    encoding: str | None = Field(description="A CSV file's encoding: utf-8 or windows-1251")
    rows: int
    to_create: int = Field(description="Rows that would be created (a dry run)")
    created: int
    duplicates: int
    duplicates_existing: int
    duplicates_in_file: int
    invalid: int
    ignored_columns: list[str]
    results: list[ImportRowOut]

    @classmethod
    def of(cls, report: ImportReport, *, dry_run: bool) -> ImportOut:
        return cls(
            dry_run=dry_run,
            format=report.format,
            encoding=report.encoding,
            rows=len(report.rows),
            to_create=report.to_create,
            created=report.created,
            duplicates=report.duplicates,
            duplicates_existing=report.count(Outcome.DUPLICATE),
            duplicates_in_file=report.count(Outcome.DUPLICATE_IN_FILE),
            invalid=report.invalid,
            ignored_columns=report.ignored_headers,
            results=[ImportRowOut.of(row) for row in report.rows],
        )


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {_FILE_FIELD: {"type": "string", "format": "binary"}},
                    "required": [_FILE_FIELD],
                }
            },
        },
    }
}


async def _file(request: Request) -> tuple[bytes, str | None]:
    """The uploaded file and its name: a multipart form's ``file`` field, or the raw body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        return await request.body(), None
    try:
        # Leaving the block closes the form's spooled files.
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get(_FILE_FIELD)
            if not isinstance(upload, UploadFile):
                raise InvalidInput("file", "import_empty", f"send the spreadsheet as the form field {_FILE_FIELD!r}")
            return await upload.read(), upload.filename
    except InvalidInput:
        raise
    except Exception as exc:  # python-multipart's errors for a broken envelope vary: all mean "unreadable"
        raise InvalidInput("file", "import_malformed", f"the multipart form cannot be read: {exc}") from None


@router.post(
    "/import",
    summary="Import leads from a spreadsheet (.xlsx or .csv)",
    description="Managers (admin, ROP, МОП) only. The body is the file (`text/csv` in UTF-8 or Windows-1251, "
    "comma or semicolon; or an .xlsx workbook), or a `multipart/form-data` form with the field `file`. The first "
    "row names the columns, in Russian or English: name/имя/клиент, phone/телефон, source/источник, "
    "budget/бюджет, notes/заметки/комментарий, salesperson/продажник (a full name, @username or Telegram id). "
    f"At most {MAX_FILE_BYTES // (1024 * 1024)} MB and {MAX_ROWS} rows. `dry_run=true` answers the preview and "
    "saves nothing; otherwise the rows are created in batches (history `created` by the caller, automatic "
    "assignment when it is on) and each salesperson gets one summary message. Either way `results` gives every "
    "row's outcome. A file that cannot be read is a 400 and changes nothing.",
    responses={
        **responses(400, 401, 403),
        413: {
            "model": responses(413)[413]["model"],
            "description": f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB",
        },
    },
    openapi_extra=_BODY,
)
async def import_leads(
    request: Request,
    actor: CurrentUser,
    settings: SettingsDep,
    factory: Annotated[UnitOfWorkFactory, Depends(get_uow_factory)],
    dry_run: Annotated[bool, Query(description="Preview only: nothing is saved")] = False,
) -> ImportOut:
    data, filename = await _file(request)
    importer = LeadImporter(factory)
    if dry_run:
        report = await importer.preview(actor, data, filename)
    else:
        report = await importer.run(actor, data, filename, summary=import_files.summary_for(settings))
    return ImportOut.of(report, dry_run=dry_run)
