"""The live Google Sheets export: every lead a row of ``[google_sheets] sheet``, kept current.

Lead ``N`` is row ``N + 1`` (row 1 is the header), so a change rewrites the lead's own row and a deleted
lead's row is marked deleted, never left stale. What to write next is read from the database, not kept in
memory: the leads whose ``(updated_at, id)`` is past a cursor (``db.exports.changed_since``). The cursor
is stored in the sheet itself (cell ``CURSOR_CELL``), in the same ``values:batchUpdate`` as the rows it
covers, so a restart, or Google being down, loses nothing: the next write starts where the last
successful one ended. A change takes its ``updated_at`` before its transaction commits, so one committed
late can land behind the cursor: each step also looks ``LOOKBACK`` behind the cursor and writes the rows
there it has not written in their current version (after a restart it rewrites that minute once).

Quota (60 writes a minute per user): changes are gathered for ``debounce`` and written together, one
request of up to ``batch`` rows; a rolling window keeps to ``writes_per_minute``; 429 and 5xx answers (and
network errors) back off exponentially, honouring ``Retry-After``. The quota is the service account's, not
the process's: with several instances only one writes at a time, the one holding the turn in
``integration_state`` (row ``TURN_KEY``, as the integrations' workers do), renewed before each write; when
it stops or dies another takes over from the cursor in the sheet. A resync asked on any instance is kept
in that row until the writer takes it. The database unit is closed before any request to Google.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot.config import GoogleSheetsSection, Settings
from bot.presentation.views import status_label
from bot.texts import Texts, texts_for
from db.exports import Cursor, ExportRow, changed_since
from db.models import utcnow
from db.settings import CrmSection
from db.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/spreadsheets"
LAST_COLUMN = "L"
CURSOR_CELL = "N1"
# How far behind the cursor each step looks for changes whose transaction committed late.
LOOKBACK = timedelta(minutes=1)
MAX_BACKOFF = 300.0
# The integration_state row that says which instance writes the sheet, and how long a turn lasts unrenewed.
TURN_KEY = "google_sheets"
TURN = timedelta(seconds=30)
_EPOCH = (datetime(1970, 1, 1, tzinfo=UTC), 0)
# The columns A..L, as the Excel export names them.
HEADER_KEYS = (
    "id",
    "client_name",
    "phone",
    "status",
    "source",
    "budget",
    "seller",
    "created_at",
    "updated_at",
    "closing_date",
    "refusal_reason",
    "notes",
)


class SheetsError(Exception):
    """Google answered with an error (``status``) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status in (0, 408, 429) or self.status >= 500


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key: rsa.RSAPrivateKey

    @staticmethod
    def from_file(path: str) -> ServiceAccount:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        key = serialization.load_pem_private_key(info["private_key"].encode("utf-8"), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the service account's private_key is not an RSA key")
        return ServiceAccount(client_email=info["client_email"], private_key=key)

    def assertion(self, audience: str, now: float) -> str:
        """The signed JWT a service account trades for an access token (RS256)."""
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": audience, "iat": int(now), "exp": int(now) + 3600}
        payload = _b64(json.dumps(claims).encode())
        signature = self.private_key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{_b64(signature)}"


class SheetsClient:
    """The two calls the export makes: read one range, write many ranges in one request."""

    def __init__(self, config: GoogleSheetsSection, account: ServiceAccount, http: httpx.AsyncClient) -> None:
        self.config = config
        self.account = account
        self.http = http
        self._token: str | None = None
        self._token_until = 0.0

    async def _access_token(self) -> str:
        now = time.time()
        if self._token is not None and now < self._token_until - 60:
            return self._token
        data = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": self.account.assertion(self.config.token_url, now),
        }
        answer = await self._send("POST", self.config.token_url, data=data, authorized=False)
        self._token = str(answer["access_token"])
        self._token_until = now + float(answer.get("expires_in", 3600))
        return self._token

    async def _send(self, method: str, url: str, *, authorized: bool = True, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {await self._access_token()}"} if authorized else {}
        try:
            response = await self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise SheetsError(0, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 401 and authorized:
            self._token = None  # expired or revoked early: the next call gets a new one
        if response.status_code >= 400:
            retry = response.headers.get("Retry-After", "")
            raise SheetsError(
                response.status_code,
                response.text[:300],
                float(retry) if retry.replace(".", "", 1).isdigit() else None,
            )
        answer: dict[str, Any] = response.json()
        return answer

    def _url(self, suffix: str) -> str:
        return f"{self.config.api_url.rstrip('/')}/v4/spreadsheets/{quote(self.config.spreadsheet_id or '')}{suffix}"

    def a1(self, cells: str) -> str:
        return "'" + self.config.sheet.replace("'", "''") + "'!" + cells

    async def read(self, cells: str) -> list[list[Any]]:
        answer = await self._send("GET", self._url("/values/" + quote(self.a1(cells), safe="")))
        values: list[list[Any]] = answer.get("values", [])
        return values

    async def write(self, ranges: list[tuple[str, list[list[Any]]]]) -> None:
        body = {
            "valueInputOption": "RAW",
            "data": [{"range": self.a1(cells), "values": values} for cells, values in ranges],
        }
        await self._send("POST", self._url("/values:batchUpdate"), json=body)


def format_cursor(cursor: Cursor) -> str:
    return f"sync:{cursor[0].isoformat()}|{cursor[1]}"


def parse_cursor(text: object) -> Cursor | None:
    if not isinstance(text, str) or not text.startswith("sync:"):
        return None
    moment, _, lead_id = text[5:].partition("|")
    try:
        return datetime.fromisoformat(moment).astimezone(UTC), int(lead_id)
    except ValueError:
        return None


@dataclass
class SyncState:
    """What /sheets shows."""

    cursor: Cursor | None = None
    rows_written: int = 0
    last_write_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    failures: int = 0  # in a row
    writer: bool | None = None  # this instance holds the turn (None: not asked yet; False: another does)
    writes: deque[float] = field(default_factory=deque)  # monotonic times of the writes of the last minute


class SheetsSync:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        config: GoogleSheetsSection,
        crm: CrmSection,
        texts: Texts,
        client: SheetsClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_base: float = 1.0,
        lookback: timedelta = LOOKBACK,
        sender_id: str | None = None,
        turn: timedelta = TURN,
    ) -> None:
        self.uow_factory = uow_factory
        self.config = config
        self.crm = crm
        self.texts = texts
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.backoff_base = backoff_base
        self.lookback = lookback
        self.sender_id = sender_id or uuid.uuid4().hex
        self.turn = turn
        self.state = SyncState()
        self._resync = False
        # The version (updated_at) of each lead written whose updated_at is within LOOKBACK of the cursor.
        self._recent: dict[int, datetime] = {}

    # ---- rows ----------------------------------------------------------------------------------------

    def header(self) -> list[Any]:
        return [self.texts.t(f"export.col.{key}") for key in HEADER_KEYS]

    def _local(self, moment: datetime | None) -> str:
        return "" if moment is None else moment.astimezone(self.crm.tz).strftime("%d.%m.%Y %H:%M")

    def row(self, lead: ExportRow) -> list[Any]:
        status = (
            self.texts.t("sheets.deleted") if lead.deleted_at is not None else status_label(self.texts, lead.status)
        )
        return [
            lead.id,
            lead.client_name,
            lead.phone_number,
            status,
            lead.source,
            "" if lead.budget is None else lead.budget,
            lead.assignee_name or "",
            self._local(lead.created_at),
            self._local(lead.updated_at),
            "" if lead.closing_date is None else lead.closing_date.strftime("%d.%m.%Y"),
            lead.refusal_reason or "",
            lead.notes or "",
        ]

    # ---- one step ------------------------------------------------------------------------------------

    async def request_resync(self) -> None:
        """Rewrite every row from the first lead on (the cursor goes back to the start), by whichever
        instance writes: the request waits in the turn's row until the writer takes it."""
        async with self.uow_factory() as uow:
            await uow.integrations.save_secrets(TURN_KEY, {"resync": True})
            await uow.commit()

    async def take_turn(self) -> bool:
        """Become (or stay) the one writer of the sheet across instances; False while another's turn lasts."""
        now = utcnow()
        resync = False
        async with self.uow_factory() as uow:
            held = await uow.integrations.take_turn(TURN_KEY, self.sender_id, now=now, until=now + self.turn)
            if held and ((await uow.integrations.secrets(TURN_KEY)) or {}).get("resync"):
                await uow.integrations.save_secrets(TURN_KEY, {})
                resync = True
            await uow.commit()
        if held and self.state.writer is not True:
            self.state.cursor = None  # another instance may have written meanwhile: the sheet's cursor counts
        self.state.writer = held
        self._resync = self._resync or resync
        return held

    async def end_turn(self) -> None:
        """Give the turn up (on stop), so that another instance takes over at once."""
        if not self.state.writer:
            return
        self.state.writer = None
        with contextlib.suppress(Exception):  # the database is gone: the turn lapses on its own
            async with self.uow_factory() as uow:
                await uow.integrations.end_turn(TURN_KEY, self.sender_id)
                await uow.commit()

    async def _cursor(self) -> Cursor:
        if self._resync:
            self._resync = False
            self.state.cursor = _EPOCH
            self._recent.clear()
        if self.state.cursor is None:
            self._recent.clear()
            values = await self.client.read(CURSOR_CELL)
            stored = parse_cursor(values[0][0]) if values and values[0] else None
            self.state.cursor = stored or _EPOCH
        return self.state.cursor

    async def _within_quota(self) -> bool:
        """Waits until a write fits in the rolling minute and counts it; True if it had to wait."""
        window = self.state.writes
        waited = False
        while True:
            now = self.clock()
            while window and now - window[0] >= 60:
                window.popleft()
            if len(window) < self.config.writes_per_minute:
                window.append(now)
                return waited
            waited = True
            await self.sleep(60 - (now - window[0]))

    async def run_once(self) -> int:
        """Hands on the next batch of changes, if any: the rows written (0 when up to date, or when
        another instance writes)."""
        if not await self.take_turn():
            return 0
        cursor = await self._cursor()
        batch = self.config.batch
        async with self.uow_factory(read_only=True) as uow:
            # Future stamps (a clock ahead) wait until they are past: the cursor never jumps ahead of now.
            leads = await changed_since(uow.session, cursor, datetime.now(UTC), batch)
            window = (
                []
                if cursor == _EPOCH
                else await changed_since(uow.session, (cursor[0] - self.lookback, 0), cursor[0], 10**9)
            )
        ahead = {lead.id for lead in leads}
        late = [
            lead
            for lead in window
            if lead.id not in ahead
            and lead.updated_at > cursor[0] - self.lookback
            and self._recent.get(lead.id) != lead.updated_at
        ][:batch]
        leads = leads[: batch - len(late)]
        if not leads and not late:
            return 0
        ranges: list[tuple[str, list[list[Any]]]] = []
        if cursor == _EPOCH:
            ranges.append((f"A1:{LAST_COLUMN}1", [self.header()]))
        ranges += [(f"A{lead.id + 1}:{LAST_COLUMN}{lead.id + 1}", [self.row(lead)]) for lead in [*late, *leads]]
        new_cursor = (leads[-1].updated_at, leads[-1].id) if leads else cursor
        ranges.append((CURSOR_CELL, [[format_cursor(new_cursor)]]))
        if await self._within_quota() and not await self.take_turn():
            self.state.writes.pop()  # not written after all
            return 0  # the turn lapsed while waiting: another instance writes now
        await self.client.write(ranges)
        self.state.cursor = new_cursor
        horizon = new_cursor[0] - self.lookback
        self._recent.update((lead.id, lead.updated_at) for lead in [*late, *leads])
        self._recent = {lead_id: at for lead_id, at in self._recent.items() if at > horizon}
        self.state.rows_written += len(late) + len(leads)
        self.state.last_write_at = datetime.now(UTC)
        return len(late) + len(leads)

    def _failed(self, message: str) -> None:
        self.state.failures += 1
        self.state.last_error = message
        self.state.last_error_at = datetime.now(UTC)

    def backoff(self, error: SheetsError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, MAX_BACKOFF)
        return min(self.backoff_base * 2 ** min(self.state.failures - 1, 12), MAX_BACKOFF)

    async def step(self) -> float:
        """One step of the loop: how long to wait before the next one."""
        debounce = self.config.debounce.total_seconds()
        try:
            written = await self.run_once()
        except SheetsError as error:
            self._failed(str(error))
            log.warning("google sheets: %s", error)
            return self.backoff(error) if error.transient else max(self.backoff(error), debounce)
        except Exception as error:  # the database was unavailable, say: keep going, nothing is lost
            self._failed(f"{type(error).__name__}: {error}")
            log.exception("google sheets: a step failed; retrying")
            return max(self.backoff(SheetsError(0, "")), debounce)
        self.state.failures = 0
        # A full batch means more is waiting: go on at once (the quota window still holds).
        return 0.0 if written >= self.config.batch else debounce

    async def run(self) -> None:
        """The loop: until cancelled."""
        while True:
            await self.sleep(await self.step())


class SheetsExporter:
    """The export as a service of the running bot: built with the dispatcher, started and stopped by the
    runner (``bot.runner``); /sheets reads its ``sync.state``."""

    def __init__(self, uow_factory: UnitOfWorkFactory, config: GoogleSheetsSection, crm: CrmSection, lang: str) -> None:
        assert config.credentials_file is not None
        self.config = config
        self.http = httpx.AsyncClient(timeout=30)
        client = SheetsClient(config, ServiceAccount.from_file(config.credentials_file), self.http)
        self.sync = SheetsSync(uow_factory, config, crm, texts_for(lang), client)
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self.sync.run(), name="leadbot-google-sheets")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sync.end_turn()
        await self.http.aclose()


def create_exporter(settings: Settings, uow_factory: UnitOfWorkFactory) -> SheetsExporter | None:
    """The exporter when ``[google_sheets]`` names a spreadsheet and a key file, else None."""
    if not settings.google_sheets.enabled:
        return None
    return SheetsExporter(uow_factory, settings.google_sheets, settings.crm, settings.bot.default_language)
