"""A fake Meta Graph API on 127.0.0.1: a lead's form answers, and the Conversions API's events edge.

Tests point ``[meta] graph_url`` here, so the fetcher and the Conversions API adapter run over real HTTP
and never reach Meta. ``GET /{version}/{leadgen_id}`` answers the form answers held in ``leads``.
``POST /{version}/{pixel_id}/events`` takes CRM stage events (``data``, a JSON array, and
``access_token``, as a form or a JSON body) and checks them as the "Conversions API for CRM" payload
specification asks (``check_crm_event``), answering Graph's error shape when one is wrong: Meta then
refuses the whole request, so nothing of it is recorded. Accepted events are appended to ``events``.

Switches: ``fail_next`` makes the next calls (either edge) answer an error status (a Graph outage);
``rate_limit`` answers the rate-limit error past that many events requests in one second (counted in
``limit_errors``); ``refused_lead_ids`` are lead ids Meta does not know (their batch is refused);
``miscount_next`` under-reports ``events_received``; ``delay`` holds the events edge's answers back.
Every call is recorded in ``requests`` (path and query).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from aiohttp import web

ACCESS_TOKEN = "page-token-for-tests"
CAPI_TOKEN = "capi-system-user-token-for-tests"
PIXEL_ID = "1234567890123456"

# How far back an event may be (Meta: "up to 7 days before you send an event"), and how far ahead our
# clock may be of the sender's before an event counts as in the future.
MAX_EVENT_AGE = 7 * 24 * 3600
FUTURE_SKEW = 60
MAX_EVENTS = 1000
LIMIT_MESSAGES = {
    4: "Application request limit reached",
    17: "User request limit reached",
    32: "Page request limit reached",
    613: "Calls to this api have exceeded the rate limit.",
}


def graph_error(
    message: str,
    code: int,
    *,
    subcode: int | None = None,
    title: str | None = None,
    user_msg: str | None = None,
    transient: bool = False,
    type_: str = "OAuthException",
) -> dict[str, Any]:
    """Graph's error body: ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id", ...}}``."""
    error: dict[str, Any] = {"message": message, "type": type_, "code": code, "is_transient": transient}
    if subcode is not None:
        error["error_subcode"] = subcode
    if title is not None:
        error["error_user_title"] = title
    if user_msg is not None:
        error["error_user_msg"] = user_msg
    error["fbtrace_id"] = "AFakeTraceId"
    return {"error": error}


def invalid(user_msg: str, *, title: str = "Invalid parameter", subcode: int | None = None) -> dict[str, Any]:
    return graph_error("Invalid parameter", 100, subcode=subcode, title=title, user_msg=user_msg)


def check_crm_event(index: int, event: Any, now: float) -> dict[str, Any] | None:
    """Graph's error for a stage event that breaks the CRM payload specification, or None when it is fine."""
    where = f"data[{index}]"
    if not isinstance(event, dict):
        return invalid(f"{where} must be an object")
    name = event.get("event_name")
    if not isinstance(name, str) or not name.strip():
        return invalid(f"{where}: event_name is required (the lead's stage in the CRM)")
    event_time = event.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return invalid(f"{where}: event_time must be a Unix timestamp in seconds")
    if event_time < now - MAX_EVENT_AGE:
        return invalid(
            "The timestamp for this event is too far in the past. Events need to be sent from your server"
            " within 7 days of when they occurred.",
            title="Event Timestamp Too Old",
            subcode=2804003,
        )
    if event_time > now + FUTURE_SKEW:
        return invalid("The timestamp for this event is in the future.", title="Event Timestamp In Future")
    if event.get("action_source") != "system_generated":
        return invalid(f"{where}: action_source must be system_generated for Conversion Leads events")
    user_data = event.get("user_data")
    lead_id = user_data.get("lead_id") if isinstance(user_data, dict) else None
    if not isinstance(lead_id, int) or isinstance(lead_id, bool) or lead_id <= 0:
        return invalid(f"{where}: user_data.lead_id must be the lead's id, an integer (not hashed)")
    custom = event.get("custom_data")
    if not isinstance(custom, dict) or custom.get("event_source") != "crm":
        return invalid(f"{where}: custom_data.event_source must be crm for Conversion Leads events")
    source = custom.get("lead_event_source")
    if not isinstance(source, str) or not source.strip():
        return invalid(f"{where}: custom_data.lead_event_source is required (the CRM's name)")
    return None


class FakeGraph:
    def __init__(
        self, access_token: str = ACCESS_TOKEN, *, capi_token: str = CAPI_TOKEN, pixel_id: str = PIXEL_ID
    ) -> None:
        self.access_token = access_token
        self.leads: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._failures: deque[int] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0
        # The Conversions API's events edge.
        self.capi_token = capi_token
        self.pixel_id = pixel_id
        self.events: list[dict[str, Any]] = []  # every event accepted, in order
        self.batches: list[int] = []  # the size of each accepted request
        self.rejected: list[dict[str, Any]] = []  # the error bodies answered to events requests
        self.rate_limit: int | None = None  # events requests allowed per second; past it the limit error
        self.limit_code = 4  # 4 (application), 17 (user), 32 (page), 613 or 80004 (business use case)
        self.regain_minutes = 0  # 80004's X-Business-Use-Case-Usage estimated_time_to_regain_access
        self.limit_errors = 0
        self.refused_lead_ids: set[int] = set()
        self.delay = 0.0
        # When set, a lead's answers (GET /{version}/{leadgen_id}) wait until the test sets this event.
        self.lead_gate: asyncio.Event | None = None
        self._miscounts = 0
        self._recent: deque[float] = deque()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def add_lead(
        self, leadgen_id: str, answers: dict[str, str], *, platform: str = "ig", form_id: str = "F1", ad_id: str = "A1"
    ) -> None:
        self.leads[leadgen_id] = {
            "id": leadgen_id,
            "created_time": "2026-11-29T10:00:00+0000",
            "ad_id": ad_id,
            "form_id": form_id,
            "platform": platform,
            "field_data": [{"name": name, "values": [value]} for name, value in answers.items()],
        }

    def calls_for(self, leadgen_id: str) -> int:
        return sum(1 for path, _ in self.requests if path.endswith(f"/{leadgen_id}"))

    def miscount_next(self, times: int = 1) -> None:
        """The next accepted events requests report one event fewer in ``events_received``."""
        self._miscounts += times

    @property
    def events_calls(self) -> int:
        return sum(1 for path, _ in self.requests if path.endswith("/events"))

    def _over_the_limit(self) -> bool:
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            return True
        self._recent.append(now)
        return False

    def _limit_answer(self) -> web.Response:
        self.limit_errors += 1
        headers: dict[str, str] = {}
        if self.limit_code == 80004:
            body = graph_error(
                "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
                80004,
                subcode=2446079,
                transient=True,
            )
            usage = {
                "type": "ads_management",
                "call_count": 100,
                "total_cputime": 40,
                "total_time": 40,
                "estimated_time_to_regain_access": self.regain_minutes,
            }
            headers["X-Business-Use-Case-Usage"] = json.dumps({"1122334455": [usage]})
        else:
            message = LIMIT_MESSAGES.get(self.limit_code, "Calls to this api have exceeded the rate limit.")
            body = graph_error(f"(#{self.limit_code}) {message}", self.limit_code, transient=True)
        return web.json_response(body, status=400, headers=headers)

    async def _form(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            try:
                data = await request.json()
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
        return {key: value for key, value in (await request.post()).items() if isinstance(value, str)}

    def _refuse(self, body: dict[str, Any]) -> web.Response:
        self.rejected.append(body)
        return web.json_response(body, status=400)

    async def _events(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._failures:
            status = self._failures.popleft()
            return web.json_response(graph_error("An unexpected error has occurred.", 2, transient=True), status=status)
        form = await self._form(request)
        token = form.get("access_token") or request.query.get("access_token")
        if token != self.capi_token:
            body = graph_error("Invalid OAuth access token - Cannot parse access token", 190)
            return self._refuse(body)
        if request.match_info["pixel_id"] != self.pixel_id:
            pixel = request.match_info["pixel_id"]
            return self._refuse(
                graph_error(
                    f"Unsupported post request. Object with ID '{pixel}' does not exist, cannot be loaded due to"
                    " missing permissions, or does not support this operation.",
                    100,
                    subcode=33,
                    type_="GraphMethodException",
                )
            )
        if self._over_the_limit():
            return self._limit_answer()
        data = form.get("data")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                return self._refuse(invalid("param data must be an array."))
        if not isinstance(data, list) or not data:
            return self._refuse(invalid("param data must be an array."))
        if len(data) > MAX_EVENTS:
            return self._refuse(invalid(f"param data must be an array of at most {MAX_EVENTS} elements."))
        now = time.time()
        for index, event in enumerate(data):
            error = check_crm_event(index, event, now)
            if error is None and event["user_data"]["lead_id"] in self.refused_lead_ids:
                error = invalid(
                    f"data[{index}]: the lead_id does not match a lead of this business.", title="Invalid Lead ID"
                )
            if error is not None:
                return self._refuse(error)  # one bad event: Meta refuses the whole batch
        self.events.extend(data)
        self.batches.append(len(data))
        received = len(data)
        if self._miscounts:
            self._miscounts -= 1
            received -= 1
        return web.json_response({"events_received": received, "messages": [], "fbtrace_id": "AFakeTraceId"})

    async def _lead(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        if self.lead_gate is not None:
            await self.lead_gate.wait()
        if self._failures:
            status = self._failures.popleft()
            return web.json_response({"error": {"message": "unavailable", "code": 2}}, status=status)
        if request.query.get("access_token") != self.access_token:
            return web.json_response({"error": {"message": "Invalid OAuth access token", "code": 190}}, status=400)
        lead = self.leads.get(request.match_info["leadgen_id"])
        if lead is None:
            return web.json_response({"error": {"message": "Unsupported get request", "code": 100}}, status=400)
        return web.json_response(lead)

    async def __aenter__(self) -> FakeGraph:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/{version}/{leadgen_id}", self._lead)
        app.router.add_post("/{version}/{pixel_id}/events", self._events)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the port the system picked (public API)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
