"""Bitrix24: leads sent through an incoming webhook, status changes brought back from outgoing events.

Every call is ``POST {webhook_url}{method}.json`` with a JSON body. The webhook's address is its secret
(``/rest/<user>/<code>/``): it is never logged and never part of an error text. Bitrix24 counts requests
in a leaky bucket (2 a second drain, 50 deep on most plans) shared by everything that calls the portal,
so one ``RateLimiter`` spaces our calls and ``batch`` carries up to 50 commands in one request; a
``QUERY_LIMIT_EXCEEDED`` answer pauses the limiter.

What goes where (see docs/integrations-bitrix24.md):

- CREATE: ``crm.lead.add``; on a retry or a first sync the phone is looked up first
  (``crm.duplicate.findbycomm``), so a create whose answer was lost links the lead instead of doubling it.
- UPDATE: ``crm.lead.update`` with the lead's current fields; COMMENT: ``crm.timeline.comment.add``.
- PULL: ``crm.lead.get``; its STATUS_ID is mapped back to our status.
- An outgoing event (``ONCRMLEADUPDATE``) carries only the lead's id: ``parse_event`` checks its
  application token and returns the id, and the worker queues a PULL.
"""

from __future__ import annotations

import hmac
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from pydantic import ConfigDict, Field, SecretStr, field_validator

from db.durations import Duration
from db.enums import LeadStatus
from db.settings import Section
from integrations.common import (
    AuthFailed,
    JobKind,
    LeadSnapshot,
    Outcome,
    RateLimiter,
    Rejected,
    RemoteError,
    RetryLater,
    SyncJob,
)

DEFAULT_STATUSES: dict[LeadStatus, str] = {
    LeadStatus.NEW: "NEW",
    LeadStatus.IN_WORK: "IN_PROCESS",
    LeadStatus.CLOSED: "CONVERTED",
    LeadStatus.REFUSED: "JUNK",
}
UNMAPPED_SOURCE = "OTHER"

# The documented most commands one ``batch`` request may carry.
MAX_BATCH = 50
# Our own burst after idling: small, because the portal's bucket is shared with every other integration.
BURST = 3
# After QUERY_LIMIT_EXCEEDED nobody sends for this long: at 2/s the bucket drains 3 requests meanwhile.
LIMIT_PAUSE = 1.5
# OPERATION_TIME_LIMIT blocks one method until its summed run time over 10 minutes falls under the limit.
OPERATION_PAUSE = 60.0

# https://<portal>/rest/<user id>/<code>/ (an optional path before /rest/ for on-premise installations).
_WEBHOOK = re.compile(r"^https?://[^/\s?#]+/(?:[^\s?#]*/)?rest/\d+/[^/\s?#]+/$")
_LEAD_ID = re.compile(r"^[1-9][0-9]{0,18}$")

# Error codes meaning the webhook itself is wrong, revoked or lacks rights: an admin has to act.
_AUTH_ERRORS = frozenset(
    {
        "INVALID_CREDENTIALS",
        "NO_AUTH_FOUND",
        "expired_token",
        "invalid_token",
        "insufficient_scope",
        "ACCESS_DENIED",  # REST is not available on the portal's plan
        "INVALID_REQUEST",  # HTTPS required
        "OVERLOAD_LIMIT",  # REST blocked by Bitrix24's support
        "user_access_error",
        "PORTAL_DELETED",
        "ERROR_METHOD_NOT_FOUND",  # also what a webhook without the crm scope gets
    }
)
# Error codes a later try may not get.
_TRANSIENT_ERRORS = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"})
# ``batch`` substitutes these in its commands' values; a value quoting one is sent on its own.
_RESULT_REFERENCE = re.compile(r"\$result(?:_error|_total|_next|_time)?\[")


class Bitrix24Section(Section):
    """``[bitrix24]``: off while ``webhook_url`` is empty."""

    # A validation error never echoes the input: the webhook's address is its secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    # An incoming webhook with the crm scope, as Bitrix24 shows it: https://<portal>/rest/<user>/<code>/
    webhook_url: SecretStr | None = None
    # The outgoing webhook's application token: every event must carry it in auth[application_token].
    application_token: SecretStr | None = None
    # Our status -> the lead's STATUS_ID there; a status left out keeps its default.
    statuses: dict[LeadStatus, str] = Field(default_factory=lambda: dict(DEFAULT_STATUSES))
    # Our source -> SOURCE_ID there (CALL, WEB, ADVERTISING, RECOMMENDATION...); the others are OTHER.
    sources: dict[str, str] = Field(default_factory=dict)
    # A salesperson's Telegram id -> their user id there (ASSIGNED_BY_ID); unmapped: left as it is there.
    users: dict[int, int] = Field(default_factory=dict)
    currency: str = "USD"
    # Requests a second: Bitrix24's bucket drains 2 a second (5 on Enterprise plans).
    rate: float = Field(default=2.0, gt=0)
    timeout: Duration = timedelta(seconds=10)
    max_attempts: int = Field(default=12, ge=1)

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not value:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// or http://")
        if not value.endswith("/"):
            value += "/"
        if not _WEBHOOK.match(value):
            raise ValueError(
                "expected https://<portal>/rest/<user id>/<code>/ as Bitrix24 shows the incoming webhook, "
                "without a method name after the code"
            )
        return value

    @field_validator("application_token", mode="before")
    @classmethod
    def _application_token(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: dict[LeadStatus, str]) -> dict[LeadStatus, str]:
        table = {**DEFAULT_STATUSES, **{status: status_id.strip() for status, status_id in value.items()}}
        if any(not status_id for status_id in table.values()):
            raise ValueError("a STATUS_ID cannot be empty")
        if len(set(table.values())) != len(table):
            # A pulled STATUS_ID must name one status of ours.
            raise ValueError("two statuses map to the same STATUS_ID")
        return table

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: dict[str, str]) -> dict[str, str]:
        table = {source.strip(): source_id.strip() for source, source_id in value.items()}
        if any(not source_id for source_id in table.values()):
            raise ValueError("a SOURCE_ID cannot be empty")
        return table

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        value = value.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("expected a three-letter currency code like USD or UZS")
        return value

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    def status_from(self, status_id: object) -> LeadStatus | None:
        """Our status for a STATUS_ID there; None for a stage we do not map (PROCESSED, a custom one)."""
        for status, mapped in self.statuses.items():
            if mapped == status_id:
                return status
        return None

    def source_id(self, source: str) -> str:
        return self.sources.get(source, UNMAPPED_SOURCE)


# --- outgoing events ---------------------------------------------------------------------------------


class EventRejected(Exception):
    """An outgoing event that is not Bitrix24's (a wrong or missing application token) or is malformed."""


def parse_event(section: Bitrix24Section, form: Mapping[str, Any] | str | bytes) -> str | None:
    """The remote lead id an outgoing event is about, once its application token is checked.

    ``form`` is the event's form-encoded body, raw or parsed (``data[FIELDS][ID]`` flat keys). Only
    ``ONCRMLEADUPDATE`` returns an id: ``ONCRMLEADADD`` is a lead made there, linked to none of ours (or
    made by us, whose status we already have), and other events are not about a lead's status; they
    answer None. Raises ``EventRejected`` for a wrong or missing token, or an update without a lead id.
    """
    fields = _form_fields(form)
    if section.application_token is None:
        raise EventRejected("[bitrix24] application_token is not set: events are refused")
    given = fields.get("auth[application_token]", "")
    expected = section.application_token.get_secret_value()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise EventRejected("wrong or missing auth[application_token]")
    if fields.get("event", "").upper() != "ONCRMLEADUPDATE":
        return None
    lead_id = fields.get("data[FIELDS][ID]", "").strip()
    if not _LEAD_ID.match(lead_id):
        raise EventRejected("ONCRMLEADUPDATE without a lead id in data[FIELDS][ID]")
    return lead_id


def _form_fields(form: Mapping[str, Any] | str | bytes) -> dict[str, str]:
    if isinstance(form, bytes):
        form = form.decode("utf-8", errors="replace")
    if isinstance(form, str):
        return dict(parse_qsl(form, keep_blank_values=True))
    return {key: value for key, value in form.items() if isinstance(value, str)}


# --- the batch's query strings -----------------------------------------------------------------------


def encode_query(params: Mapping[str, Any]) -> str:
    """``params`` as the query string of a ``batch`` command: nested keys in brackets, as PHP reads them
    (``fields[PHONE][0][VALUE]=...``), every value percent-encoded once (the batch goes as JSON)."""
    return urlencode(list(_flatten(params, "")))


def _flatten(value: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for name, item in value.items():
            yield from _flatten(item, f"{key}[{name}]" if key else str(name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{key}[{index}]")
    elif value is None:
        yield key, ""
    else:
        yield key, str(value)


# --- the adapter ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Command:
    job: SyncJob
    method: str
    params: dict[str, Any]


# What a command got: the method's result, or the error that answered it.
_Answer = tuple[_Command, Any]


class _BatchRefused(Exception):
    """The ``batch`` request as a whole was refused (too long, say): its commands go one by one."""


COMMENT_LIST = "crm.timeline.comment.list"


def _comment_list_params(job: SyncJob) -> dict[str, Any]:
    return {"filter": {"ENTITY_ID": job.remote_id, "ENTITY_TYPE": "lead"}, "select": ["ID", "COMMENT"]}


def _has_comment(answer: Any, text: str) -> bool:
    """Whether a ``crm.timeline.comment.list`` answer (its first page, the newest 50) holds ``text``."""
    items = answer if isinstance(answer, list) else []
    return any(isinstance(item, dict) and item.get("COMMENT") == text for item in items)


class Bitrix24Adapter:
    name = "bitrix24"
    batch_size = MAX_BATCH

    def __init__(self, section: Bitrix24Section, *, http: httpx.AsyncClient | None = None) -> None:
        if section.webhook_url is None:
            raise ValueError("[bitrix24] webhook_url is not set")
        self.section = section
        self._base = section.webhook_url.get_secret_value()
        self._secrets = _secret_parts(self._base)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=section.timeout.total_seconds())
        self.limiter = RateLimiter(section.rate, burst=BURST)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def find_lead_by_phone(self, phone: str) -> str | None:
        """The newest lead there with this phone, if any (Bitrix24 compares the digits only)."""
        return _newest_lead(await self._call("crm.duplicate.findbycomm", _lookup_params(phone)))

    async def deliver(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        lookups: list[_Command] = []
        writes: list[_Command] = []
        for job in jobs:
            settled = self._settle_locally(job)
            if settled is not None:
                outcomes[job.id] = settled
            elif job.kind is JobKind.CREATE and (job.attempts > 0 or job.first_sync):
                # An earlier try may have created it (its answer lost), or it was made there by hand.
                lookups.append(_Command(job, "crm.duplicate.findbycomm", _lookup_params(_lead(job).phone_number)))
            elif job.kind is JobKind.COMMENT and job.attempts > 0:
                # An earlier try may have reached Bitrix24 before its answer was lost: never a second one.
                lookups.append(_Command(job, COMMENT_LIST, _comment_list_params(job)))
            else:
                writes.append(self._command(job))
        for command, answer in await self._run(lookups):
            if isinstance(answer, RemoteError):
                outcomes[command.job.id] = _failed(command.job, answer)
            elif command.method == COMMENT_LIST:
                if _has_comment(answer, command.job.comment or ""):
                    outcomes[command.job.id] = Outcome.done(command.job.id)
                else:
                    writes.append(self._command(command.job))
            elif (remote_id := _newest_lead(answer)) is not None:
                outcomes[command.job.id] = Outcome.done(command.job.id, remote_id=remote_id)
            else:
                writes.append(self._command(command.job))
        for command, answer in await self._run(writes):
            outcomes[command.job.id] = self._outcome(command, answer)
        return [outcomes[job.id] for job in jobs]

    # --- jobs -> commands -> outcomes

    def _settle_locally(self, job: SyncJob) -> Outcome | None:
        """The outcome of a job that needs no call."""
        if job.kind is JobKind.STAGE:
            return Outcome.failed(job.id, "Bitrix24 has no stage events (Meta's Conversions API has)", permanent=True)
        if job.lead is None:
            return Outcome.done(job.id)  # deleted here: nothing to send, nothing to bring back
        if job.kind is JobKind.CREATE:
            return Outcome.done(job.id, remote_id=job.remote_id) if job.remote_id is not None else None
        if job.remote_id is None:
            return Outcome.failed(job.id, "the lead is not yet created in Bitrix24")
        if job.kind is JobKind.COMMENT and not (job.comment or "").strip():
            return Outcome.failed(job.id, "a comment job without text", permanent=True)
        return None

    def _command(self, job: SyncJob) -> _Command:
        lead = _lead(job)
        if job.kind is JobKind.CREATE:
            fields = {**self._fields(lead), "PHONE": [{"VALUE": lead.phone_number, "VALUE_TYPE": "WORK"}]}
            if lead.budget is None:
                del fields["OPPORTUNITY"]
            if lead.notes:
                fields["COMMENTS"] = lead.notes
            return _Command(job, "crm.lead.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}})
        if job.kind is JobKind.UPDATE:
            # No PHONE: a multifield sent without its ID there is added beside the old one, not replacing it.
            return _Command(job, "crm.lead.update", {"id": job.remote_id, "fields": self._fields(lead)})
        if job.kind is JobKind.COMMENT:
            fields = {"ENTITY_ID": job.remote_id, "ENTITY_TYPE": "lead", "COMMENT": job.comment}
            return _Command(job, "crm.timeline.comment.add", {"fields": fields})
        if job.kind is JobKind.PULL:
            return _Command(job, "crm.lead.get", {"id": job.remote_id})
        raise AssertionError(f"no Bitrix24 command for {job.kind}")

    def _fields(self, lead: LeadSnapshot) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "TITLE": f"{lead.client_name} (LeadBot #{lead.lead_id})",
            "NAME": lead.client_name,
            "STATUS_ID": self.section.statuses[lead.status],
            "SOURCE_ID": self.section.source_id(lead.source),
            # Our source's own name, kept there even when it maps to OTHER.
            "SOURCE_DESCRIPTION": lead.source,
            # Empty clears an amount there when the budget was removed here.
            "OPPORTUNITY": lead.budget if lead.budget is not None else "",
            "CURRENCY_ID": self.section.currency,
        }
        assignee = self.section.users.get(lead.assignee_telegram_id) if lead.assignee_telegram_id else None
        if assignee is not None:
            fields["ASSIGNED_BY_ID"] = assignee
        return fields

    def _outcome(self, command: _Command, answer: Any) -> Outcome:
        job = command.job
        if isinstance(answer, RemoteError):
            return _failed(job, answer)
        if job.kind is JobKind.CREATE:
            remote_id = _lead_id(answer)
            if remote_id is None:
                return Outcome.failed(job.id, f"Bitrix24 crm.lead.add answered no lead id: {str(answer)[:100]}")
            return Outcome.done(job.id, remote_id=remote_id)
        if job.kind is JobKind.PULL:
            if not isinstance(answer, Mapping):
                return Outcome.failed(job.id, "Bitrix24 crm.lead.get answered no lead")
            return Outcome.done(job.id, remote_status=self.section.status_from(answer.get("STATUS_ID")))
        if answer is False:
            return Outcome.failed(job.id, f"Bitrix24 {command.method} answered false")
        return Outcome.done(job.id)

    # --- sending

    async def _run(self, commands: list[_Command]) -> list[_Answer]:
        """Every command's answer: up to 50 in one ``batch`` request, a lone command as a plain call.

        A request that fails as a whole (a 5xx, the rate limit, the credentials) raises while nothing has
        been answered yet, so the worker retries the whole batch; once something has (a lead was made),
        the failure becomes the answer of every command still unanswered, and what was done is kept.
        """
        answers: list[_Answer] = []
        pending = deque(_groups(commands))
        while pending:
            group = pending.popleft()
            try:
                if len(group) == 1:
                    answers.append((group[0], await self._answer(group[0])))
                else:
                    answers += await self._send_batch(group)
            except _BatchRefused:
                pending.extendleft([command] for command in reversed(group))
            except (RetryLater, AuthFailed) as error:
                if not answers:
                    raise
                answers += [(command, error) for rest in (group, *pending) for command in rest]
                break
        return answers

    async def _answer(self, command: _Command) -> Any:
        try:
            return await self._call(command.method, command.params)
        except Rejected as error:
            return error

    async def _send_batch(self, group: list[_Command]) -> list[_Answer]:
        keys = {f"j{command.job.id}": command for command in group}
        cmd = {key: f"{command.method}?{encode_query(command.params)}" for key, command in keys.items()}
        try:
            answer = await self._call("batch", {"halt": 0, "cmd": cmd})
        except Rejected as error:
            raise _BatchRefused from error
        # PHP answers an empty list where there is nothing, an object otherwise.
        results = answer.get("result") if isinstance(answer, Mapping) else None
        errors = answer.get("result_error") if isinstance(answer, Mapping) else None
        results = results if isinstance(results, Mapping) else {}
        errors = errors if isinstance(errors, Mapping) else {}
        answers: list[_Answer] = []
        for key, command in keys.items():
            if key in errors:
                refusal = errors[key] if isinstance(errors[key], Mapping) else {}
                answers.append((command, self._error(command.method, None, refusal)))
            elif key in results:
                answers.append((command, results[key]))
            else:
                answers.append((command, RetryLater(f"Bitrix24 batch: no answer for {command.method}")))
        if all(isinstance(answer, AuthFailed) for _, answer in answers):
            raise answers[0][1]
        return answers

    async def _call(self, method: str, params: Mapping[str, Any]) -> Any:
        """One request; its result, or the error it answered raised."""
        await self.limiter.acquire()
        try:
            response = await self._http.post(f"{self._base}{method}.json", json=params)
        except httpx.TimeoutException:
            raise RetryLater(f"Bitrix24 {method}: no answer in time") from None
        except httpx.HTTPError as exc:
            raise RetryLater(f"Bitrix24 {method}: {type(exc).__name__}: {self._scrub(str(exc))}"[:300]) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, Mapping) and "result" in body and "error" not in body:
            return body["result"]
        if 300 <= response.status_code < 400:
            raise AuthFailed(
                f"Bitrix24 {method}: redirected (HTTP {response.status_code}): check [bitrix24] webhook_url"
            )
        if response.status_code == 200:
            raise RetryLater(f"Bitrix24 {method}: an answer without a result")
        raise self._error(method, response.status_code, body if isinstance(body, Mapping) else {})

    def _error(self, method: str, status: int | None, body: Mapping[str, Any]) -> RemoteError:
        """The error an answer means; ``status`` is None for one command of a batch."""
        code = str(body.get("error") or "")
        description = self._scrub(str(body.get("error_description") or ""))[:200]
        label = code or (f"HTTP {status}" if status is not None else "an error without a code")
        what = f"Bitrix24 {method}: {label}"
        if description:
            what += f": {description}"
        if code == "QUERY_LIMIT_EXCEEDED":
            self.limiter.pause(LIMIT_PAUSE)
            return RetryLater(what, retry_after=LIMIT_PAUSE)
        if code == "OPERATION_TIME_LIMIT" or status == 429:
            return RetryLater(what, retry_after=OPERATION_PAUSE)
        # A 404 without a known code is no REST endpoint at all: the webhook's address is wrong.
        if code in _AUTH_ERRORS or status in (401, 403, 404):
            return AuthFailed(f"{what} (check [bitrix24] webhook_url and its crm rights)")
        if code in _TRANSIENT_ERRORS or (status is not None and status >= 500):
            return RetryLater(what)
        return Rejected(what)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<webhook>")
        return text


def _groups(commands: list[_Command]) -> Iterator[list[_Command]]:
    batchable = [command for command in commands if not _refers_to_results(command.params)]
    for start in range(0, len(batchable), MAX_BATCH):
        yield batchable[start : start + MAX_BATCH]
    for command in commands:
        if _refers_to_results(command.params):
            yield [command]


def _refers_to_results(params: Mapping[str, Any]) -> bool:
    return any(_RESULT_REFERENCE.search(value) for _, value in _flatten(params, ""))


def _secret_parts(webhook_url: str) -> list[str]:
    """The webhook's address and its path: either would let whoever reads it act as the webhook."""
    path = urlsplit(webhook_url).path
    code = path.rstrip("/").rsplit("/", 1)[-1]
    return [part for part in (webhook_url, webhook_url.rstrip("/"), path.rstrip("/"), code) if part]


def _lead(job: SyncJob) -> LeadSnapshot:
    assert job.lead is not None, "settled locally when the lead is gone"
    return job.lead


def _lookup_params(phone: str) -> dict[str, Any]:
    return {"entity_type": "LEAD", "type": "PHONE", "values": [phone]}


def _newest_lead(answer: Any) -> str | None:
    """The highest lead id of a ``crm.duplicate.findbycomm`` answer (``[]`` when nothing matched): after a
    create whose answer was lost, ours is the newest there."""
    ids = answer.get("LEAD") if isinstance(answer, Mapping) else None
    found = [int(lead_id) for lead_id in ids or [] if _lead_id(lead_id) is not None]
    return str(max(found)) if found else None


def _lead_id(value: Any) -> str | None:
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    return text if _LEAD_ID.match(text) else None


def _failed(job: SyncJob, error: RemoteError) -> Outcome:
    retry_after = error.retry_after if isinstance(error, RetryLater) else None
    return Outcome.failed(job.id, str(error), permanent=isinstance(error, Rejected), retry_after=retry_after)
