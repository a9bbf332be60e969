"""amoCRM (Kommo): LeadBot's leads as amoCRM leads, each with its contact (name and phone) and its
source as a tag; comments as notes; status changes made there brought back here.

What is sent (API v4, one request per batch of up to ``BATCH`` jobs of one kind):

- CREATE: ``POST /api/v4/leads/complex``, the lead with its contact in one call. On a retry (an earlier
  try may have created it before the answer was lost) and on the first sync, the phone is looked up
  first (``GET /api/v4/contacts?query=…&with=leads``): a contact with that phone and a lead is linked
  instead of creating a duplicate.
- UPDATE: ``PATCH /api/v4/leads``, the lead's current state (name, budget, status, assignee).
- COMMENT: ``POST /api/v4/leads/notes``, a common note.
- PULL: ``GET /api/v4/leads/{id}``, its status mapped back to ours.

Our four statuses map to amo status ids per ``[amocrm.statuses]``; what it leaves out comes from the
pipeline: its first stage for "новый", its second for "в работе", 142 (won) for "закрыт" and 143 (lost)
for "отказ". The pipeline is read once, lazily, and kept for the adapter's life.

Errors: a 429 pauses every request for ``Retry-After`` (1 s without one) and, like a 5xx, a timeout or a
lost connection, makes the jobs retry later (per-job ``Outcome`` s with ``retry_after``, never an
exception). A 400 fails its jobs for good with amo's validation detail; a 401 first refreshes an OAuth
access token once, then raises ``AuthFailed``, as do 402 and 403. Nothing here ever puts a token into
an error message.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from db.durations import Duration
from db.enums import LeadStatus
from db.settings import Section
from integrations.common import (
    AuthFailed,
    JobKind,
    Outcome,
    RateLimiter,
    Rejected,
    RetryLater,
    SyncJob,
    TokenStore,
)

BATCH = 50  # amo's documented ceiling for one batch call
WON_STATUS_ID = 142  # every amo pipeline ends in these two
LOST_STATUS_ID = 143
UNSORTED_STATUS_TYPE = 1  # the "Неразобранное" stage, where amo's own inbox puts leads
# An access token this close to its expiry is refreshed before use rather than after a 401.
REFRESH_MARGIN = 60.0
DEFAULT_PAUSE = 1.0  # a 429 without Retry-After
MIN_WEBHOOK_SECRET = 16
USER_AGENT = "LeadBot amoCRM adapter"
_WEBHOOK_KEY = re.compile(r"^leads\[(status|update)\]\[(\d+)\]\[(id|status_id|pipeline_id)\]$")
_AMO_HOSTS = (".amocrm.ru", ".amocrm.com", ".kommo.com")


class AmoCrmSection(Section):
    """``[amocrm]``: the account, its credentials (a long-lived token, or OAuth), and how our statuses and
    people map to its own."""

    base_url: str | None = None  # https://yourcompany.amocrm.ru
    # Either a long-lived token (amo: Settings → Integrations → your private integration → Keys)…
    long_lived_token: SecretStr | None = None
    # …or OAuth: the integration's id, secret and redirect URI, and the refresh token its authorization
    # code was exchanged for. amo rotates refresh tokens on every use: the later ones live in the
    # database (the TokenStore), this one is only where the chain starts.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    redirect_uri: str | None = None
    refresh_token: SecretStr | None = None
    # The pipeline our leads live in; empty: the account's main pipeline.
    pipeline_id: int | None = None
    # Our status word -> amo status_id; what is left out comes from the pipeline (see the module's doc).
    statuses: dict[str, int] = Field(default_factory=dict)
    # Telegram id -> amo user id, the lead's responsible user; an unmapped assignee is not sent.
    users: dict[int, int] = Field(default_factory=dict)
    # The contact's phone field (amo's built-in multitext field is PHONE).
    phone_field_code: str = "PHONE"
    # What amo's webhook URL must carry (?secret=…) for its posts to be believed.
    webhook_secret: SecretStr | None = None
    # Requests per second. amo refuses more than 7; spacing at exactly 7 still draws an occasional 429,
    # as a request woken a few milliseconds late lands in the same second as one on time.
    rate: float = Field(default=6.5, gt=0, le=7)
    timeout: Duration = timedelta(seconds=10)
    max_attempts: int = Field(default=12, ge=1)

    @field_validator("base_url", "redirect_uri")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an address such as https://yourcompany.amocrm.ru")
        return value

    @field_validator("statuses")
    @classmethod
    def _our_statuses(cls, value: dict[str, int]) -> dict[str, int]:
        known = {status.value for status in LeadStatus}
        cleaned = {key.strip().lower(): status_id for key, status_id in value.items()}
        unknown = sorted(set(cleaned) - known)
        if unknown:
            raise ValueError(f"unknown status {', '.join(map(repr, unknown))}; ours are {', '.join(sorted(known))}")
        if any(status_id <= 0 for status_id in cleaned.values()):
            raise ValueError("amoCRM status ids are positive numbers")
        if len(set(cleaned.values())) != len(cleaned):
            raise ValueError("two of our statuses map to one amoCRM status: a change there could not be read back")
        return cleaned

    @field_validator("users")
    @classmethod
    def _user_ids(cls, value: dict[int, int]) -> dict[int, int]:
        if any(user_id <= 0 for user_id in value.values()):
            raise ValueError("amoCRM user ids are positive numbers")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: only its shortcoming.
        if value is not None and len(value.get_secret_value()) < MIN_WEBHOOK_SECRET:
            raise ValueError(f"the secret is shorter than {MIN_WEBHOOK_SECRET} characters")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @model_validator(mode="after")
    def _one_way_in(self) -> AmoCrmSection:
        oauth = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uri": self.redirect_uri,
            "refresh_token": self.refresh_token,
        }
        given = [name for name, value in oauth.items() if value is not None]
        if given and self.long_lived_token is not None:
            raise ValueError(f"set either long_lived_token or OAuth ({', '.join(given)}), not both")
        if given and len(given) < len(oauth):
            missing = [name for name in oauth if name not in given]
            raise ValueError(f"OAuth needs {', '.join(missing)} as well")
        return self

    @property
    def oauth(self) -> bool:
        return self.client_id is not None

    @property
    def enabled(self) -> bool:
        return self.base_url is not None and (self.long_lived_token is not None or self.oauth)


class SetupFailed(AuthFailed):
    """The account lacks what the settings name (a pipeline, a status): like wrong credentials, every job
    waits until an admin fixes ``[amocrm]``, rather than failing for good one by one."""


class AmoRejected(Rejected):
    """A 400; ``items`` are the positions in the batch amo's validation errors point at (empty: unknown)."""

    def __init__(self, message: str, items: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.items = items


@dataclass(frozen=True, slots=True)
class StatusMapping:
    pipeline_id: int
    to_amo: dict[LeadStatus, int]

    def to_ours(self, status_id: int) -> LeadStatus | None:
        for status, amo_id in self.to_amo.items():
            if amo_id == status_id:
                return status
        return None


@dataclass(frozen=True, slots=True)
class RemoteLeadChange:
    """One lead amo's webhook says changed, with its ids as amo sent them (status and pipeline)."""

    remote_id: str
    status_id: int | None
    pipeline_id: int | None


class ForeignWebhook(ValueError):
    """A webhook from another amo account than ``[amocrm] base_url`` names."""


def parse_webhook(
    form: Mapping[str, str] | Iterable[tuple[str, str]], section: AmoCrmSection
) -> list[RemoteLeadChange]:
    """The leads amo's form-encoded webhook (``leads[status][0][id]=…``, ``leads[update][0][id]=…``) says
    changed, once each, in the order first named.

    Pure, so the endpoint answers amo at once: it does not map statuses (that needs the pipeline, read
    over the network) but hands the ids on; a PULL job then reads the lead and maps its status
    (``AmoCrmAdapter.status_for``). Leads in another pipeline than ``[amocrm] pipeline_id`` are left out
    here when it is set; with the main pipeline (unset), ``status_for`` leaves them out.
    """
    pairs = form.items() if isinstance(form, Mapping) else form
    fields: dict[tuple[str, int], dict[str, str]] = {}
    subdomain = None
    for key, value in pairs:
        if key == "account[subdomain]":
            subdomain = value
            continue
        match = _WEBHOOK_KEY.match(key)
        if match:
            event, index, name = match.groups()
            fields.setdefault((event, int(index)), {})[name] = value
    _check_account(subdomain, section)
    changes: dict[str, RemoteLeadChange] = {}
    for (_event, _index), lead in sorted(fields.items(), key=lambda item: (item[0][0] != "status", item[0][1])):
        remote_id = lead.get("id", "").strip()
        if not remote_id.isdigit():
            continue
        change = RemoteLeadChange(remote_id, _int_or_none(lead.get("status_id")), _int_or_none(lead.get("pipeline_id")))
        if section.pipeline_id is not None and change.pipeline_id not in (None, section.pipeline_id):
            continue
        changes.setdefault(remote_id, change)
    return list(changes.values())


def webhook_secret_matches(section: AmoCrmSection, given: str | None) -> bool:
    """Whether a webhook request carries ``[amocrm] webhook_secret`` (compared in constant time)."""
    if section.webhook_secret is None or given is None:
        return False
    return hmac.compare_digest(section.webhook_secret.get_secret_value().encode(), given.encode())


def _check_account(subdomain: str | None, section: AmoCrmSection) -> None:
    host = urlsplit(section.base_url or "").hostname or ""
    if subdomain is None or not host.endswith(_AMO_HOSTS):
        return  # a custom domain names no subdomain to compare with
    if host.split(".", 1)[0] != subdomain.strip().lower():
        raise ForeignWebhook(f"a webhook from amoCRM account {subdomain!r}, not the configured {host}")


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def _same_phone(ours: str, theirs: str) -> bool:
    # amo keeps a phone as typed ("8 (90) 123-45-67", "+998901234567"): compare the subscriber's digits.
    a, b = _digits(ours), _digits(theirs)
    return bool(a) and (a == b or (min(len(a), len(b)) >= 9 and a[-9:] == b[-9:]))


def _chunks(items: Sequence[SyncJob], size: int = BATCH) -> Iterable[Sequence[SyncJob]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _numbered(item: Callable[[SyncJob], dict[str, Any]], jobs: Sequence[SyncJob]) -> list[dict[str, Any]]:
    # amo echoes request_id in its validation errors: the position tells which lead it refused.
    return [item(job) | {"request_id": str(index)} for index, job in enumerate(jobs)]


def _price(budget: float | None) -> int:
    return round(budget) if budget is not None else 0


_Handler = Callable[[Sequence[SyncJob]], Awaitable[list[Outcome]]]


class AmoCrmAdapter:
    """The queue's worker's view of one amoCRM account (``integrations.common.Adapter``).

    ``deliver`` answers one Outcome per job and raises only ``AuthFailed`` (and its ``SetupFailed``),
    and that only when nothing in the call had gone through yet: after a success, the remaining jobs get
    failed (retryable) Outcomes instead, so what was delivered is recorded and never sent twice.
    """

    name = "amocrm"
    batch_size = BATCH

    def __init__(self, section: AmoCrmSection, tokens: TokenStore, *, http: httpx.AsyncClient | None = None) -> None:
        if not section.enabled or section.base_url is None:
            raise ValueError("[amocrm] needs base_url and a long-lived token or OAuth credentials")
        self.section = section
        self.base_url = section.base_url
        self.tokens = tokens
        self.limiter = RateLimiter(section.rate)  # every request, token refreshes included
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=section.timeout.total_seconds())
        self._auth_lock = asyncio.Lock()
        self._mapping_lock = asyncio.Lock()
        self._mapping: StatusMapping | None = None
        self._stored: dict[str, Any] | None = None  # OAuth: access_token, refresh_token, expires_at
        self._handlers: dict[JobKind, _Handler] = {
            JobKind.CREATE: self._create,
            JobKind.UPDATE: self._update,
            JobKind.COMMENT: self._comment,
            JobKind.PULL: self._pull,
            JobKind.STAGE: self._not_ours,
        }

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    # -- the queue's side --------------------------------------------------------------------------

    async def deliver(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        # The worker hands over at most one job per lead, so grouping by kind reorders nothing that matters.
        # A pull is a GET of its own: alone in its batch, one read is kept when a later one meets an outage.
        batches = [
            (kind, batch)
            for kind in JobKind
            for batch in _chunks([job for job in jobs if job.kind == kind], 1 if kind == JobKind.PULL else BATCH)
        ]
        try:
            for kind, batch in batches:
                for outcome in await self._handlers[kind](batch):
                    outcomes[outcome.job_id] = outcome
        except RetryLater as exc:
            # The rest would meet the same outage or limit: they wait too, without spending requests.
            for job in jobs:
                outcomes.setdefault(job.id, Outcome.failed(job.id, str(exc), retry_after=exc.retry_after))
        except AuthFailed as exc:
            if not any(outcome.ok for outcome in outcomes.values()):
                raise
            for job in jobs:
                outcomes.setdefault(job.id, Outcome.failed(job.id, f"authorisation: {exc}"))
        return [outcomes[job.id] for job in jobs]

    async def _create(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        to_create: list[SyncJob] = []
        for job in jobs:
            if job.lead is None:
                outcomes.append(Outcome.done(job.id))  # deleted before it was sent: nothing to create
            elif job.remote_id is not None:
                outcomes.append(Outcome.done(job.id, remote_id=job.remote_id))
            elif job.attempts > 0 or job.first_sync:
                # An earlier try may have created it and lost the answer; the first sync may find it there.
                existing = await self.find_lead_by_phone(job.lead.phone_number)
                if existing is not None:
                    outcomes.append(Outcome.done(job.id, remote_id=existing))
                else:
                    to_create.append(job)
            else:
                to_create.append(job)
        if to_create:
            mapping = await self.mapping()
            outcomes += await self._send_batch(
                "POST", "/api/v4/leads/complex", to_create, lambda job: self._complex_lead(job, mapping), self._created
            )
        return outcomes

    def _complex_lead(self, job: SyncJob, mapping: StatusMapping) -> dict[str, Any]:
        lead = job.lead
        assert lead is not None
        body: dict[str, Any] = {
            "name": lead.client_name,
            "pipeline_id": mapping.pipeline_id,
            "status_id": mapping.to_amo[lead.status],
        }
        if lead.budget is not None:
            body["price"] = _price(lead.budget)
        responsible = self._responsible(lead.assignee_telegram_id)
        if responsible is not None:
            body["responsible_user_id"] = responsible
        contact = {
            "name": lead.client_name,
            "custom_fields_values": [
                {
                    "field_code": self.section.phone_field_code,
                    "values": [{"value": lead.phone_number, "enum_code": "WORK"}],
                }
            ],
        }
        body["_embedded"] = {"contacts": [contact], "tags": [{"name": lead.source}]}
        return body

    @staticmethod
    def _created(jobs: Sequence[SyncJob], answer: Any) -> list[Outcome]:
        # The complex method answers one {"id", "contact_id", …} per lead, in the request's order.
        if not isinstance(answer, list) or len(answer) != len(jobs):
            raise RetryLater("amoCRM answered the lead creation with an unexpected body")
        return [Outcome.done(job.id, remote_id=str(item["id"])) for job, item in zip(jobs, answer, strict=True)]

    async def _update(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        to_send: list[SyncJob] = []
        for job in jobs:
            if job.lead is None:
                outcomes.append(Outcome.done(job.id))  # deleted here: nothing to send
            elif job.remote_id is None:
                outcomes.append(Outcome.failed(job.id, "not yet created in amoCRM"))
            else:
                to_send.append(job)
        if to_send:
            mapping = await self.mapping()
            outcomes += await self._send_batch(
                "PATCH", "/api/v4/leads", to_send, lambda job: self._patch_lead(job, mapping), self._all_done
            )
        return outcomes

    def _patch_lead(self, job: SyncJob, mapping: StatusMapping) -> dict[str, Any]:
        lead = job.lead
        assert lead is not None and job.remote_id is not None
        body: dict[str, Any] = {
            "id": int(job.remote_id),
            "name": lead.client_name,
            "price": _price(lead.budget),  # no budget here is no price there (amo's price is never empty)
            "pipeline_id": mapping.pipeline_id,
            "status_id": mapping.to_amo[lead.status],
        }
        responsible = self._responsible(lead.assignee_telegram_id)
        if responsible is not None:
            body["responsible_user_id"] = responsible
        return body

    async def _comment(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        to_send: list[SyncJob] = []
        for job in jobs:
            if not job.comment:
                outcomes.append(Outcome.done(job.id))  # the comment is gone: nothing to send
            elif job.remote_id is None:
                outcomes.append(Outcome.failed(job.id, "not yet created in amoCRM"))
            elif job.attempts and await self._has_note(job.remote_id, job.comment):
                # An earlier try may have reached amo before its answer was lost: never a second note.
                outcomes.append(Outcome.done(job.id))
            else:
                to_send.append(job)
        if to_send:
            outcomes += await self._send_batch("POST", "/api/v4/leads/notes", to_send, self._note, self._all_done)
        return outcomes

    async def _has_note(self, remote_id: str, text: str) -> bool:
        """Whether amo's lead already has a common note with exactly ``text`` (its latest 250)."""
        answer = await self._request(
            "GET",
            f"/api/v4/leads/{int(remote_id)}/notes",
            params={"filter[note_type]": "common", "limit": "250", "order[id]": "desc"},
        )
        notes = ((answer or {}).get("_embedded") or {}).get("notes") or []
        return any((note.get("params") or {}).get("text") == text for note in notes if isinstance(note, dict))

    @staticmethod
    def _note(job: SyncJob) -> dict[str, Any]:
        assert job.remote_id is not None
        return {"entity_id": int(job.remote_id), "note_type": "common", "params": {"text": job.comment}}

    async def _pull(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for job in jobs:
            if job.remote_id is None:
                outcomes.append(Outcome.failed(job.id, "no amoCRM lead is linked to this lead", permanent=True))
                continue
            try:
                lead = await self._request("GET", f"/api/v4/leads/{int(job.remote_id)}")
            except Rejected as exc:
                outcomes.append(Outcome.failed(job.id, str(exc), permanent=True))
                continue
            if not isinstance(lead, dict):
                outcomes.append(Outcome.failed(job.id, f"amoCRM has no lead {job.remote_id}", permanent=True))
                continue
            status = await self.status_for(lead.get("status_id"), lead.get("pipeline_id"))
            outcomes.append(Outcome.done(job.id, remote_status=status))
        return outcomes

    @staticmethod
    async def _not_ours(jobs: Sequence[SyncJob]) -> list[Outcome]:
        return [Outcome.failed(job.id, "amoCRM has no stage events (they are Meta's)", permanent=True) for job in jobs]

    @staticmethod
    def _all_done(jobs: Sequence[SyncJob], _answer: Any) -> list[Outcome]:
        return [Outcome.done(job.id) for job in jobs]

    async def _send_batch(
        self,
        method: str,
        path: str,
        jobs: Sequence[SyncJob],
        item: Callable[[SyncJob], dict[str, Any]],
        outcomes: Callable[[Sequence[SyncJob], Any], list[Outcome]],
    ) -> list[Outcome]:
        """One batch call; on a 400 naming some items, those fail for good and the rest are sent once more,
        so one bad lead does not sink the other 49 (amo refuses a whole batch for one bad item)."""
        try:
            return outcomes(jobs, await self._request(method, path, json=_numbered(item, jobs)))
        except AmoRejected as exc:
            bad = {index for index in exc.items if index < len(jobs)}
            if not bad or len(bad) == len(jobs):
                return [Outcome.failed(job.id, str(exc), permanent=True) for job in jobs]
            first = [Outcome.failed(jobs[i].id, str(exc), permanent=True) for i in sorted(bad)]
            rest = [job for i, job in enumerate(jobs) if i not in bad]
            try:
                return first + outcomes(rest, await self._request(method, path, json=_numbered(item, rest)))
            except Rejected as again:
                return first + [Outcome.failed(job.id, str(again), permanent=True) for job in rest]

    def _responsible(self, telegram_id: int | None) -> int | None:
        return self.section.users.get(telegram_id) if telegram_id is not None else None

    # -- lookups ------------------------------------------------------------------------------------

    async def find_lead_by_phone(self, phone: str) -> str | None:
        """The newest amo lead of a contact with this phone, if any (used on retries and by the first sync)."""
        digits = _digits(phone)
        if not digits:
            return None
        answer = await self._request("GET", "/api/v4/contacts", params={"query": digits, "with": "leads"})
        if not isinstance(answer, dict):
            return None  # 204: no contact matches
        lead_ids: list[int] = []
        for contact in answer.get("_embedded", {}).get("contacts", []):
            if not self._has_phone(contact, phone):
                continue  # amo's query matches any field, and parts of numbers
            lead_ids += [int(lead["id"]) for lead in contact.get("_embedded", {}).get("leads", [])]
        return str(max(lead_ids)) if lead_ids else None

    def _has_phone(self, contact: dict[str, Any], phone: str) -> bool:
        return any(
            _same_phone(phone, str(value.get("value", "")))
            for field in contact.get("custom_fields_values") or []
            if field.get("field_code") == self.section.phone_field_code
            for value in field.get("values") or []
        )

    async def status_for(self, status_id: int | None, pipeline_id: int | None) -> LeadStatus | None:
        """Our status for an amo status (None: another pipeline, or a stage none of ours maps to)."""
        if status_id is None:
            return None
        mapping = await self.mapping()
        if pipeline_id is not None and pipeline_id != mapping.pipeline_id:
            return None
        return mapping.to_ours(status_id)

    async def mapping(self) -> StatusMapping:
        """The pipeline and our statuses' amo ids, read from the account once and then kept."""
        async with self._mapping_lock:
            if self._mapping is None:
                self._mapping = await self._read_mapping()
            return self._mapping

    async def _read_mapping(self) -> StatusMapping:
        pipeline_id = self.section.pipeline_id
        if pipeline_id is None:
            try:
                answer = await self._request("GET", "/api/v4/leads/pipelines")
            except Rejected as exc:
                raise SetupFailed(f"amoCRM did not list its pipelines: {exc}") from None
            pipelines = answer.get("_embedded", {}).get("pipelines", []) if isinstance(answer, dict) else []
            pipeline = next((p for p in pipelines if p.get("is_main")), None)
            if pipeline is None:
                raise SetupFailed("amoCRM names no main pipeline: set [amocrm] pipeline_id")
        else:
            try:
                pipeline = await self._request("GET", f"/api/v4/leads/pipelines/{pipeline_id}")
            except Rejected as exc:
                raise SetupFailed(f"amoCRM has no pipeline {pipeline_id}: {exc}") from None
            if not isinstance(pipeline, dict):
                raise SetupFailed(f"amoCRM has no pipeline {pipeline_id}")
        statuses = pipeline.get("_embedded", {}).get("statuses", [])
        known = {int(s["id"]) for s in statuses} | {WON_STATUS_ID, LOST_STATUS_ID}
        stages = [
            int(s["id"])
            for s in sorted(statuses, key=lambda s: s.get("sort", 0))
            if s.get("type") != UNSORTED_STATUS_TYPE and int(s["id"]) not in (WON_STATUS_ID, LOST_STATUS_ID)
        ]
        defaults = {LeadStatus.CLOSED: WON_STATUS_ID, LeadStatus.REFUSED: LOST_STATUS_ID}
        if len(stages) >= 2:
            defaults |= {LeadStatus.NEW: stages[0], LeadStatus.IN_WORK: stages[1]}
        to_amo = defaults | {LeadStatus(key): value for key, value in self.section.statuses.items()}
        name = f"pipeline {pipeline.get('id')}"
        missing = [status.value for status in LeadStatus if status not in to_amo]
        if missing:
            raise SetupFailed(
                f"amoCRM's {name} has fewer than two stages: map {', '.join(missing)} in [amocrm.statuses]"
            )
        foreign = [f"{status.value}={amo_id}" for status, amo_id in to_amo.items() if amo_id not in known]
        if foreign:
            raise SetupFailed(f"amoCRM's {name} has no status {', '.join(foreign)}: fix [amocrm.statuses]")
        if len(set(to_amo.values())) != len(to_amo):
            raise SetupFailed(f"two of our statuses map to one status of amoCRM's {name}: fix [amocrm.statuses]")
        return StatusMapping(int(pipeline["id"]), to_amo)

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None) -> Any:
        """amo's answer as JSON (None for 204, amo's "nothing found"), or the error it maps to."""
        for attempt in range(2):
            token = await self._access_token()
            response = await self._send(method, path, json=json, params=params, token=token)
            if response.status_code == 401 and self.section.oauth and attempt == 0:
                await self._refresh(rejected=token)
                continue
            return self._answer(method, path, response)
        raise AssertionError("unreachable")

    async def _send(
        self, method: str, path: str, *, json: Any, params: dict[str, str] | None, token: str | None
    ) -> httpx.Response:
        headers = {"User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        await self.limiter.acquire()
        try:
            return await self.http.request(method, self.base_url + path, json=json, params=params, headers=headers)
        except httpx.TimeoutException:
            raise RetryLater(f"amoCRM did not answer {method} {path} in time") from None
        except httpx.TransportError as exc:
            raise RetryLater(f"amoCRM could not be reached ({type(exc).__name__})") from None

    def _answer(self, method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        what = f"{method} {path}"
        if status == 204:
            return None
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise RetryLater(f"amoCRM answered {what} with a body that is not JSON") from None
        if status == 429:
            wait = _retry_after(response)
            self.limiter.pause(wait)
            raise RetryLater(f"amoCRM: too many requests (429) on {what}", retry_after=wait)
        if status >= 500 or status == 408:
            raise RetryLater(f"amoCRM answered {what} with {status}")
        detail = _detail(response)
        if status == 401:
            how = "the access token, even refreshed" if self.section.oauth else "the long-lived token"
            raise AuthFailed(f"amoCRM refused {how} (401 {detail}): authorize LeadBot again")
        if status in (402, 403):
            raise AuthFailed(f"amoCRM refused {what} ({status} {detail}): the account or its access needs an admin")
        if status == 404:
            raise Rejected(f"amoCRM has no {path} (404)")
        raise AmoRejected(f"amoCRM refused {what} ({status}): {detail}", _bad_items(response))

    # -- OAuth --------------------------------------------------------------------------------------

    async def _access_token(self) -> str | None:
        if self.section.long_lived_token is not None:
            return self.section.long_lived_token.get_secret_value()
        async with self._auth_lock:
            stored = await self._tokens()
            if stored.get("access_token") and float(stored.get("expires_at", 0)) > time.time() + REFRESH_MARGIN:
                return str(stored["access_token"])
            return await self._refresh_locked()

    async def _refresh(self, *, rejected: str | None) -> None:
        async with self._auth_lock:
            stored = await self._tokens()
            if stored.get("access_token") != rejected:
                return  # another request refreshed it meanwhile: a second refresh would burn the new token
            await self._refresh_locked()

    async def _tokens(self) -> dict[str, Any]:
        if self._stored is None:
            self._stored = await self.tokens.load() or {}
        return self._stored

    async def _refresh_locked(self) -> str:
        """A new access token; amo also answers a new refresh token, the old one dying as it is used, so
        the new pair is saved before anything else is sent."""
        section = self.section
        assert section.client_id is not None and section.client_secret is not None
        stored = await self._tokens()
        # The stored token first; the configured one when it differs (an admin authorized again).
        candidates = [stored.get("refresh_token"), section.refresh_token and section.refresh_token.get_secret_value()]
        refusals: list[str] = []
        for refresh_token in dict.fromkeys(token for token in candidates if token):
            body = {
                "client_id": section.client_id,
                "client_secret": section.client_secret.get_secret_value(),
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "redirect_uri": section.redirect_uri,
            }
            response = await self._send("POST", "/oauth2/access_token", json=body, params=None, token=None)
            if response.status_code == 429 or response.status_code >= 500:
                self._answer("POST", "/oauth2/access_token", response)  # raises RetryLater
            if response.status_code != 200:
                refusals.append(f"{response.status_code} {_detail(response)}")
                continue
            answer = response.json()
            fresh = {
                "access_token": answer["access_token"],
                "refresh_token": answer["refresh_token"],
                "expires_at": time.time() + float(answer.get("expires_in", 86400)),
            }
            await self.tokens.save(fresh)
            self._stored = fresh
            return str(fresh["access_token"])
        reason = "; ".join(refusals) or "no refresh token is stored or configured"
        raise AuthFailed(f"amoCRM refused to refresh the access token ({reason}): authorize LeadBot again")


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(float(response.headers.get("Retry-After", "")), 0.0) or DEFAULT_PAUSE
    except ValueError:
        return DEFAULT_PAUSE


def _detail(response: httpx.Response) -> str:
    """amo's own words for a refusal: its validation errors, or its ``detail``/``hint``/``title``."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no detail"
    if not isinstance(body, dict):
        return "no detail"
    problems = []
    for item in body.get("validation-errors") or []:
        for error in item.get("errors") or []:
            problems.append(f"item {item.get('request_id')}: {error.get('path')}: {error.get('detail')}")
    if problems:
        return "; ".join(problems)[:400]
    return str(body.get("detail") or body.get("hint") or body.get("title") or "no detail")[:400]


def _bad_items(response: httpx.Response) -> frozenset[int]:
    try:
        body = response.json()
    except ValueError:
        return frozenset()
    if not isinstance(body, dict):
        return frozenset()
    items = set()
    for item in body.get("validation-errors") or []:
        request_id = str(item.get("request_id", ""))
        if request_id.isdigit():
            items.add(int(request_id))
    return frozenset(items)
