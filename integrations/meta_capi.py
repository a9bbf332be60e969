"""Meta's Conversions API for CRM: each lead's stages go back to Meta, so its ads learn which leads convert.

Only leads from a Meta instant form can be reported: Meta matches an event to its lead by the lead-ads id
(``leadgen_id``). A ``JobKind.STAGE`` job says the lead reached a status at a time (``payload``:
``{"status": "в работе", "at": "2026-11-29T10:00:00+00:00"}``); it becomes one event of
``POST {graph_url}/{graph_version}/{pixel_id}/events``, as the "Conversion Leads" payload specification
asks: ``event_name`` the stage's name (free-form, the CRM's own stages), ``event_time`` the change's Unix
time, ``action_source`` ``system_generated``, ``user_data.lead_id`` the lead id as an integer (not hashed),
``custom_data`` ``{"event_source": "crm", "lead_event_source": "LeadBot"}``. Up to 1,000 events go in one
request.

What Meta refuses is never sent:
- an event older than 7 days (Meta refuses the *whole request* when one is): failed for good, unsent;
- a job for a lead without a Meta lead id, or with a status or time that cannot be read: failed for good;
- a job for a lead that was deleted: done, nothing sent (there is no lead id to send any more).

Meta refuses a whole request when one of its events is bad. So when a request of several events is
refused for its content (a 400 that is not about the token, the dataset or a limit), it is split in halves
and each half sent again, down to the single events Meta refuses, which fail for good with Meta's message;
the others are delivered. The splitting spends at most ``SPLIT_BUDGET`` extra requests per ``deliver``; the
events it could not settle within that fail for now (not for good) and come back with a later batch.

Errors (Graph's ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``):
- code 190, 102, permissions (10, 200-299), an unknown or inaccessible dataset (100/33), HTTP 401:
  ``AuthFailed``: every job waits until an admin fixes the token or the dataset id;
- codes 4, 17, 32, 613, 80004 or HTTP 429 (a rate limit): ``RetryLater``, and nobody sends until the time
  Meta gives (X-Business-Use-Case-Usage, Retry-After) or ``LIMIT_PAUSE`` has passed;
- a 5xx, a transient error (``is_transient``, codes 1 and 2), a timeout, no connection, an answer that is
  not Graph's, or fewer ``events_received`` than sent: ``RetryLater``;
- any other 4xx: refused for good (see the splitting above).
A request error raised before any request of the batch was answered is raised for the whole batch; after
one was, the jobs not settled yet fail for now (retried later) and the settled ones keep their outcome.
No message ever includes the access token (it travels in the request's body, never in its address).

A request that timed out may have reached Meta: sent again, its events carry the same ``event_id`` (the
lead, the stage and its time), which Meta uses with ``event_name`` to deduplicate; Meta documents that
for a browser event and a server event, so a duplicate stage is possible, if rare.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from db.enums import LeadStatus
from integrations.common import (
    AuthFailed,
    JobKind,
    Outcome,
    RateLimiter,
    Rejected,
    RemoteError,
    RetryLater,
    SyncJob,
)

MAX_EVENTS = 1000  # Meta's most events in one request
MAX_AGE = timedelta(days=7)  # Meta refuses an event whose event_time is older
# An event this close to 7 days old is given up too: by the time it reaches Meta it may be past the limit
# (our clock, Meta's, the request's own time), and one such event gets a whole request of 1,000 refused.
AGE_MARGIN = timedelta(minutes=5)
# A change stamped a little ahead of now (a clock that stepped) is sent as of now; further ahead is refused.
FUTURE_SKEW = timedelta(minutes=10)
LEAD_EVENT_SOURCE = "LeadBot"
TOO_OLD = "older than 7 days: Meta refuses it"
# A rate limit without Meta saying for how long: nobody sends for this many seconds.
LIMIT_PAUSE = 60.0
# Extra requests one ``deliver`` may spend splitting a refused batch to find its bad events.
SPLIT_BUDGET = 32

RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80004})
TOKEN_CODES = frozenset({102, 190})  # the session or token is invalid, expired or revoked
TRANSIENT_CODES = frozenset({1, 2})  # "an unknown error", "a temporary issue due to downtime"
UNKNOWN_OBJECT_SUBCODE = 33  # code 100: the dataset does not exist or this token may not use it

# Meta's event_name is free-form: "the stages you use within your CRM". These are ours, in English; they
# are what Events Manager lists and what a Conversion Leads campaign is told to optimise for, so choose
# them once (``stage_names`` overrides them).
DEFAULT_STAGE_NAMES: Mapping[LeadStatus, str] = {
    LeadStatus.NEW: "New lead",
    LeadStatus.IN_WORK: "In work",
    LeadStatus.CLOSED: "Closed won",
    LeadStatus.REFUSED: "Refused",
}


class Secret(Protocol):
    def get_secret_value(self) -> str: ...


class CapiSection(Protocol):
    """What the adapter reads of ``[meta]`` (``bot.config.MetaSection`` is one)."""

    @property
    def graph_url(self) -> str: ...

    @property
    def graph_version(self) -> str: ...

    @property
    def pixel_id(self) -> str | None: ...

    @property
    def capi_access_token(self) -> Secret | None: ...

    @property
    def capi_rate(self) -> float: ...

    @property
    def timeout(self) -> timedelta: ...


def parse_time(value: Any) -> datetime:
    """An ISO-8601 time as an aware UTC datetime (a time without an offset is taken as UTC)."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 time, got {type(value).__name__}")
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _retry_after(response: httpx.Response) -> float | None:
    """How long Meta asks us to wait, in seconds, when it says: X-Business-Use-Case-Usage (minutes) or
    Retry-After (seconds)."""
    waits: list[float] = []
    usage = response.headers.get("x-business-use-case-usage")
    if usage:
        try:
            parsed = json.loads(usage)
        except ValueError:
            parsed = None
        entries = parsed.values() if isinstance(parsed, dict) else []
        for entry in entries:
            for item in entry if isinstance(entry, list) else []:
                minutes = item.get("estimated_time_to_regain_access") if isinstance(item, dict) else None
                if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
                    waits.append(float(minutes) * 60)
    header = response.headers.get("retry-after", "").strip()
    if header:
        try:
            seconds = float(header)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            waits.append(seconds)
    return max(waits) if waits else None


class MetaCapiAdapter:
    """The Conversions API for CRM as the queue's worker sees it: ``STAGE`` jobs in, one outcome each."""

    name = "meta"
    batch_size = MAX_EVENTS

    def __init__(
        self,
        section: CapiSection,
        *,
        http: httpx.AsyncClient | None = None,
        stage_names: Mapping[LeadStatus | str, str] | None = None,
        limit_pause: float = LIMIT_PAUSE,
    ) -> None:
        token = section.capi_access_token.get_secret_value() if section.capi_access_token is not None else ""
        if not section.pixel_id or not token:
            raise ValueError("Meta's Conversions API needs [meta] pixel_id and capi_access_token")
        self._token = token
        self.url = f"{section.graph_url.rstrip('/')}/{section.graph_version}/{section.pixel_id}/events"
        self.limiter = RateLimiter(rate=section.capi_rate)
        self.limit_pause = limit_pause
        names = dict(DEFAULT_STAGE_NAMES)
        for status, stage in (stage_names or {}).items():
            if not stage.strip():
                raise ValueError(f"stage_names: the name for {status!s} is empty")
            names[LeadStatus(status)] = stage.strip()
        self.stage_names: Mapping[LeadStatus, str] = names
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=section.timeout.total_seconds())

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # ---- one job -----------------------------------------------------------------------------------------

    def event_for(self, job: SyncJob, now: datetime) -> dict[str, Any] | Outcome:
        """The event a job sends, or its outcome when nothing is to be sent (``now`` an aware UTC time)."""
        if job.kind is not JobKind.STAGE:
            return Outcome.failed(
                job.id, f"Meta's Conversions API takes stage changes only, not a {job.kind.value} job", permanent=True
            )
        if job.lead is None:
            return Outcome.done(job.id)  # the lead was deleted: no lead id is left to report
        leadgen_id = (job.lead.leadgen_id or "").strip()
        if not leadgen_id:
            return Outcome.failed(
                job.id,
                "no Meta lead id (leadgen_id): only leads from a Meta instant form can be reported to Meta",
                permanent=True,
            )
        if not (leadgen_id.isascii() and leadgen_id.isdigit()):
            return Outcome.failed(job.id, f"the Meta lead id {leadgen_id[:40]!r} is not a number", permanent=True)
        try:
            status = LeadStatus(str(job.payload.get("status")))
        except ValueError:
            return Outcome.failed(job.id, f"unknown status {job.payload.get('status')!r:.60}", permanent=True)
        try:
            at = parse_time(job.payload.get("at"))
        except ValueError:
            return Outcome.failed(
                job.id, f"the time of the change {job.payload.get('at')!r:.60} is not an ISO-8601 time", permanent=True
            )
        if now - at > MAX_AGE - AGE_MARGIN:
            return Outcome.failed(job.id, TOO_OLD, permanent=True)
        if at - now > FUTURE_SKEW:
            return Outcome.failed(job.id, f"the time of the change ({at.isoformat()}) is in the future", permanent=True)
        event_time = math.floor(min(at, now).timestamp())
        return {
            "event_name": self.stage_names[status],
            "event_time": event_time,
            # The same stage sent twice (a retry after a timeout) carries the same id.
            "event_id": f"leadbot-{job.lead_id}-{status.code.value}-{event_time}",
            "action_source": "system_generated",
            "user_data": {"lead_id": int(leadgen_id)},
            "custom_data": {"event_source": "crm", "lead_event_source": LEAD_EVENT_SOURCE},
        }

    # ---- a batch -----------------------------------------------------------------------------------------

    async def deliver(self, jobs: Sequence[SyncJob]) -> list[Outcome]:
        now = datetime.now(UTC)
        outcomes: list[Outcome | None] = [None] * len(jobs)
        ready: list[tuple[int, dict[str, Any]]] = []
        for index, job in enumerate(jobs):
            made = self.event_for(job, now)
            if isinstance(made, Outcome):
                outcomes[index] = made
            else:
                ready.append((index, made))

        pending = deque(ready[start : start + MAX_EVENTS] for start in range(0, len(ready), MAX_EVENTS))
        answered = False  # has Meta settled any event of this batch yet?
        budget = SPLIT_BUDGET
        while pending:
            chunk = pending.popleft()
            try:
                await self.send([event for _, event in chunk])
            except Rejected as exc:
                answered = True
                if len(chunk) == 1:
                    outcomes[chunk[0][0]] = Outcome.failed(jobs[chunk[0][0]].id, str(exc), permanent=True)
                elif budget >= 2:
                    budget -= 2
                    half = len(chunk) // 2
                    pending.extendleft([chunk[half:], chunk[:half]])  # the first half goes first
                else:
                    error = f"Meta refused a batch of {len(chunk)} events for a bad one in it (sent again later): {exc}"
                    for index, _ in chunk:
                        outcomes[index] = Outcome.failed(jobs[index].id, error)
                continue
            except RemoteError as exc:
                if not answered:
                    raise
                retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
                for rest in (chunk, *pending):
                    for index, _ in rest:
                        outcomes[index] = Outcome.failed(jobs[index].id, str(exc), retry_after=retry_after)
                break
            answered = True
            for index, _ in chunk:
                outcomes[index] = Outcome.done(jobs[index].id)
        return [outcome for outcome in outcomes if outcome is not None]

    # ---- one request ---------------------------------------------------------------------------------------

    async def send(self, events: list[dict[str, Any]]) -> None:
        """Post up to 1,000 events; return when Meta took them all, else raise a ``RemoteError``."""
        if not 1 <= len(events) <= MAX_EVENTS:
            raise ValueError(f"1 to {MAX_EVENTS} events per request, not {len(events)}")
        await self.limiter.acquire()
        form = {"data": json.dumps(events, ensure_ascii=False, separators=(",", ":")), "access_token": self._token}
        try:
            response = await self._http.post(self.url, data=form)
        except httpx.TimeoutException as exc:
            raise RetryLater(f"Meta's Graph API did not answer in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise RetryLater(
                self._safe(f"Meta's Graph API could not be reached: {type(exc).__name__}: {exc}")
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if response.status_code == 200 and isinstance(body, dict) and error is None:
            received = body.get("events_received")
            if received != len(events):
                trace = body.get("fbtrace_id")
                raise RetryLater(self._safe(f"Meta received {received!r:.20} of {len(events)} events ({trace!r:.40})"))
            return
        raise self._error(response, error if isinstance(error, dict) else None)

    def _error(self, response: httpx.Response, error: dict[str, Any] | None) -> RemoteError:
        status = response.status_code
        code = error.get("code") if error is not None else None
        subcode = error.get("error_subcode") if error is not None else None
        text = self._describe(status, error, response)
        if status == 429 or code in RATE_LIMIT_CODES:
            wait = _retry_after(response) or self.limit_pause
            self.limiter.pause(wait)
            return RetryLater(text, retry_after=wait)
        if (
            status == 401
            or code in TOKEN_CODES
            or code == 10
            or (isinstance(code, int) and 200 <= code <= 299)
            or (code == 100 and subcode == UNKNOWN_OBJECT_SUBCODE)
        ):
            return AuthFailed(text)
        if status >= 500 or error is None or code in TRANSIENT_CODES or error.get("is_transient") is True:
            return RetryLater(text)
        if 400 <= status < 500:
            return Rejected(text)
        return RetryLater(text)

    def _describe(self, status: int, error: dict[str, Any] | None, response: httpx.Response) -> str:
        if error is None:
            return self._safe(f"Meta's Graph API answered {status} without a Graph error: {response.text[:200]!r}")
        parts = [str(error.get("message") or "no message")]
        title, detail = error.get("error_user_title"), error.get("error_user_msg")
        if title or detail:
            parts.append(": ".join(str(p) for p in (title, detail) if p))
        codes = ", ".join(
            f"{label} {error[key]}"
            for key, label in (("code", "code"), ("error_subcode", "subcode"), ("fbtrace_id", "fbtrace_id"))
            if error.get(key) is not None
        )
        return self._safe(f"Meta's Graph API answered {status}: {' — '.join(parts)} ({codes})")

    def _safe(self, text: str) -> str:
        """Never show the token, even if an answer or an error echoes it."""
        return text.replace(self._token, "***")
