"""A fake amoCRM (API v4 and its OAuth token endpoint) on 127.0.0.1 (aiohttp), for integrations.amocrm.

It holds to amo's documented limits and shapes where the adapter leans on them:

- at most ``rate_limit`` requests (7) in any ``window`` (1 s) per account, counted as they arrive; past it
  429, counted in ``limit_errors``;
- at most 50 entities per batch call (400 past it); a bearer token on every API call (401 without a
  valid one); the request bodies of ``/leads/complex`` (a contact with its phone in
  ``custom_fields_values`` under ``field_code`` PHONE), ``PATCH /leads`` and ``/leads/notes``, refused
  with amo's ``validation-errors`` (400) naming each bad item's ``request_id``;
- ``GET /contacts?query=…&with=leads`` and ``GET /leads/{id}`` answer 204 when nothing matches, as amo
  answers an empty result;
- ``POST /oauth2/access_token`` rotates refresh tokens: each works once, a used one is refused (400).

What amo does that the fake does not: merging duplicate contacts, custom fields other than the phone,
companies, and the exact wording of its errors (the shapes are amo's, the words are ours).

State: ``leads`` and ``contacts`` by id, ``pipelines``, ``users``; every request is kept in
``requests``. ``fail_next`` and ``outage`` make it answer errors, ``delay`` slowly; ``move`` changes a
lead's status there and returns the webhook amo would post about it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

ACCESS_TOKEN = "amo-access-token-for-tests"
CLIENT_ID = "leadbot-client-id"
CLIENT_SECRET = "leadbot-client-secret-for-tests"
REDIRECT_URI = "https://leadbot.example.com/amocrm/oauth"
REFRESH_TOKEN = "amo-refresh-token-0"

MAIN_PIPELINE = 7000
OTHER_PIPELINE = 8000
# The main pipeline's stages, listed out of order (amo orders them by "sort", not by position).
UNSORTED, FIRST_CONTACT, NEGOTIATION, DECISION = 70000, 70001, 70002, 70003
WON, LOST = 142, 143
PHONE_ENUM_CODES = {"WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"}
MAX_BATCH = 50


def _status(status_id: int, name: str, sort: int, pipeline_id: int, kind: int = 0) -> dict[str, Any]:
    return {
        "id": status_id,
        "name": name,
        "sort": sort,
        "is_editable": kind == 0,
        "pipeline_id": pipeline_id,
        "type": kind,
    }


def default_pipelines() -> dict[int, dict[str, Any]]:
    main = [
        _status(NEGOTIATION, "Переговоры", 30, MAIN_PIPELINE),
        _status(WON, "Успешно реализовано", 10000, MAIN_PIPELINE),
        _status(FIRST_CONTACT, "Первичный контакт", 20, MAIN_PIPELINE),
        _status(UNSORTED, "Неразобранное", 10, MAIN_PIPELINE, kind=1),
        _status(LOST, "Закрыто и не реализовано", 11000, MAIN_PIPELINE),
        _status(DECISION, "Принимают решение", 40, MAIN_PIPELINE),
    ]
    other = [
        _status(80001, "Заявка", 10, OTHER_PIPELINE),
        _status(80002, "Договор", 20, OTHER_PIPELINE),
        _status(WON, "Успешно реализовано", 10000, OTHER_PIPELINE),
        _status(LOST, "Закрыто и не реализовано", 11000, OTHER_PIPELINE),
    ]
    return {
        OTHER_PIPELINE: {"id": OTHER_PIPELINE, "name": "Аренда", "sort": 2, "is_main": False, "statuses": other},
        MAIN_PIPELINE: {"id": MAIN_PIPELINE, "name": "Продажи", "sort": 1, "is_main": True, "statuses": main},
    }


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    at: float  # time.monotonic() on arrival
    status: int = 0  # what it was answered


def _problem(status: int, detail: str, **extra: Any) -> web.Response:
    title = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status)


def _validation(errors: list[tuple[str, str, str]]) -> web.Response:
    """amo's 400 for a batch: one entry per refused item, by the item's request_id."""
    by_item: dict[str, list[dict[str, str]]] = {}
    for request_id, path, detail in errors:
        by_item.setdefault(request_id, []).append({"code": "InvalidValue", "path": path, "detail": detail})
    items = [{"request_id": request_id, "errors": problems} for request_id, problems in by_item.items()]
    return _problem(400, "Request validation failed", **{"validation-errors": items})


class FakeAmoCrm:
    def __init__(
        self,
        *,
        subdomain: str = "leadbot",
        access_tokens: set[str] | None = None,
        refresh_token: str = REFRESH_TOKEN,
        rate_limit: int = 7,
        window: float = 1.0,
    ) -> None:
        self.subdomain = subdomain
        self.access_tokens = {ACCESS_TOKEN} if access_tokens is None else set(access_tokens)
        self.refresh_tokens = {refresh_token}
        self.used_refresh_tokens: set[str] = set()
        self.rate_limit = rate_limit
        self.window = window
        self.pipelines = default_pipelines()
        self.users = {5001: "Анна", 5002: "Бекзод"}
        self.leads: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.requests: list[FakeRequest] = []
        self.limit_errors = 0
        self._arrivals: deque[float] = deque()
        self._failures: deque[tuple[int, dict[str, str], str | None]] = deque()
        self._outage_until = 0.0
        self._outage_status = 503
        self.delay = 0.0  # seconds each answer waits: a slow amo
        self._ids = itertools.count(30_000_001)
        self._tokens = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- test controls ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(
        self, status: int = 503, times: int = 1, *, retry_after: str | None = None, path: str | None = None
    ) -> None:
        """Answer the next ``times`` requests (to ``path`` only, if given) with ``status``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self._failures.extend([(status, headers, path)] * times)

    def outage(self, seconds: float, status: int = 503) -> None:
        self._outage_until = time.monotonic() + seconds
        self._outage_status = status

    def count(self, path: str, method: str | None = None) -> int:
        """Requests to ``path`` (``/api/v4`` may be left out), of ``method`` if given."""
        full = path if path.startswith(("/api/", "/oauth2/")) else "/api/v4" + path
        return sum(1 for r in self.requests if r.path == full and (method is None or r.method == method))

    def add_lead(
        self, name: str, phone: str, *, status_id: int = FIRST_CONTACT, pipeline_id: int = MAIN_PIPELINE
    ) -> int:
        """A lead someone made in amo by hand, with its contact."""
        lead_id = next(self._ids)
        contact_id = self._add_contact(name, phone, lead_id)
        self.leads[lead_id] = {
            "id": lead_id,
            "name": name,
            "price": 0,
            "status_id": status_id,
            "pipeline_id": pipeline_id,
            "responsible_user_id": 5001,
            "contact_id": contact_id,
            "phone": phone,
            "tags": [],
            "notes": [],
        }
        return lead_id

    def move(self, lead_id: int, status_id: int, pipeline_id: int | None = None) -> str:
        """Move a lead there, as a salesperson in amo would; the form body amo then posts to its webhook."""
        lead = self.leads[lead_id]
        old_status, old_pipeline = lead["status_id"], lead["pipeline_id"]
        lead["status_id"] = status_id
        lead["pipeline_id"] = pipeline_id or old_pipeline
        return urlencode(
            {
                "leads[status][0][id]": str(lead_id),
                "leads[status][0][status_id]": str(status_id),
                "leads[status][0][pipeline_id]": str(lead["pipeline_id"]),
                "leads[status][0][old_status_id]": str(old_status),
                "leads[status][0][old_pipeline_id]": str(old_pipeline),
                "account[id]": "29000000",
                "account[subdomain]": self.subdomain,
            }
        )

    def expire(self, access_token: str) -> None:
        self.access_tokens.discard(access_token)

    # -- the server ---------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeAmoCrm:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/oauth2/access_token", self._token)
        app.router.add_get("/api/v4/leads/pipelines", self._pipelines)
        app.router.add_get("/api/v4/leads/pipelines/{id}", self._pipeline)
        app.router.add_post("/api/v4/leads/complex", self._complex)
        app.router.add_patch("/api/v4/leads", self._patch_leads)
        app.router.add_post("/api/v4/leads/notes", self._notes)
        app.router.add_get("/api/v4/leads/{id}/notes", self._lead_notes)
        app.router.add_get("/api/v4/leads/{id}", self._lead)
        app.router.add_get("/api/v4/contacts", self._find_contacts)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """What comes before any method: the log, injected failures, the rate limit, the bearer token."""
        now = time.monotonic()
        body = await request.json() if request.can_read_body else None
        record = FakeRequest(request.method, request.path, dict(request.query), body, now)
        self.requests.append(record)
        if self.delay:
            await asyncio.sleep(self.delay)
        response = self._refusal(request, now)
        if response is None:
            response = await handler(request)
        record.status = response.status
        return response

    def _refusal(self, request: web.Request, now: float) -> web.StreamResponse | None:
        for failure in self._failures:
            status, headers, path = failure
            if path is None or path == request.path:
                self._failures.remove(failure)
                return web.json_response({"title": "Error", "status": status}, status=status, headers=headers)
        if now < self._outage_until:
            return web.json_response({"title": "Error", "status": self._outage_status}, status=self._outage_status)
        while self._arrivals and self._arrivals[0] <= now - self.window:
            self._arrivals.popleft()
        self._arrivals.append(now)
        if len(self._arrivals) > self.rate_limit:
            self.limit_errors += 1
            return _problem(429, "Too many requests")
        if request.path.startswith("/api/"):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in self.access_tokens:
                return _problem(401, "Invalid access token")
        return None

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (body.get("client_id"), body.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return _problem(401, "Client authentication failed", hint="Client authentication failed")
        if body.get("redirect_uri") != REDIRECT_URI:
            return _problem(400, "Invalid redirect uri", hint="Redirect URI does not match")
        if body.get("grant_type") != "refresh_token":
            return _problem(400, "Unsupported grant type")
        refresh_token = body.get("refresh_token")
        if refresh_token not in self.refresh_tokens:
            return _problem(400, "Token has been revoked", hint="Token has been revoked")
        # Rotation: the token used is dead from now on, its successor is the only one that works.
        self.refresh_tokens.discard(refresh_token)
        self.used_refresh_tokens.add(refresh_token)
        number = next(self._tokens)
        access, refresh = f"amo-access-{number}", f"amo-refresh-{number}"
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": 86400, "access_token": access, "refresh_token": refresh}
        )

    def _pipeline_body(self, pipeline: dict[str, Any]) -> dict[str, Any]:
        shown = {key: value for key, value in pipeline.items() if key != "statuses"}
        return shown | {"is_unsorted_on": True, "_embedded": {"statuses": pipeline["statuses"]}}

    async def _pipelines(self, _request: web.Request) -> web.Response:
        pipelines = [self._pipeline_body(p) for p in self.pipelines.values()]
        return web.json_response({"_total_items": len(pipelines), "_embedded": {"pipelines": pipelines}})

    async def _pipeline(self, request: web.Request) -> web.Response:
        pipeline = self.pipelines.get(int(request.match_info["id"]))
        if pipeline is None:
            return _problem(404, "Pipeline not found")
        return web.json_response(self._pipeline_body(pipeline))

    def _batch(self, body: Any) -> web.Response | None:
        if not isinstance(body, list) or not body:
            return _problem(400, "Request body must be a non-empty array")
        if len(body) > MAX_BATCH:
            return _problem(400, f"No more than {MAX_BATCH} entities in one request")
        return None

    def _lead_errors(self, request_id: str, lead: dict[str, Any], current: dict[str, Any] | None) -> list[Any]:
        errors: list[tuple[str, str, str]] = []
        if not isinstance(lead.get("name", ""), str):
            errors.append((request_id, "name", "This value should be of type string."))
        if "price" in lead and not isinstance(lead["price"], int):
            errors.append((request_id, "price", "This value should be of type int."))
        pipeline_id = lead.get("pipeline_id", current["pipeline_id"] if current else MAIN_PIPELINE)
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            errors.append((request_id, "pipeline_id", "Pipeline not found"))
        elif "status_id" in lead and lead["status_id"] not in {s["id"] for s in pipeline["statuses"]}:
            errors.append((request_id, "status_id", "The value you selected is not a valid choice."))
        if "responsible_user_id" in lead and lead["responsible_user_id"] not in self.users:
            errors.append((request_id, "responsible_user_id", "User not found"))
        return errors

    async def _complex(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._batch(body)
        if refused is not None:
            return refused
        errors: list[tuple[str, str, str]] = []
        for index, lead in enumerate(body):
            request_id = str(lead.get("request_id", index))
            errors += self._lead_errors(request_id, lead, None)
            contacts = lead.get("_embedded", {}).get("contacts", [])
            phones = [
                value.get("value")
                for contact in contacts[:1]
                for cf in contact.get("custom_fields_values") or []
                if cf.get("field_code") == "PHONE"
                for value in cf.get("values", [])
                if value.get("enum_code", "WORK") in PHONE_ENUM_CODES
            ]
            if len(contacts) != 1 or not phones or not all(isinstance(p, str) and p for p in phones):
                errors.append((request_id, "_embedded.contacts.0.custom_fields_values", "A PHONE value is expected"))
            tags = lead.get("_embedded", {}).get("tags", [])
            if not all(isinstance(tag, dict) and isinstance(tag.get("name"), str) for tag in tags):
                errors.append((request_id, "_embedded.tags", "A tag is {name: string}"))
        if errors:
            return _validation(errors)
        answer = []
        for index, lead in enumerate(body):
            lead_id = next(self._ids)
            contact = lead["_embedded"]["contacts"][0]
            phone = contact["custom_fields_values"][0]["values"][0]["value"]
            contact_id = self._add_contact(contact.get("name", ""), phone, lead_id)
            self.leads[lead_id] = {
                "id": lead_id,
                "name": lead.get("name", ""),
                "price": lead.get("price", 0),
                "status_id": lead.get("status_id", FIRST_CONTACT),
                "pipeline_id": lead.get("pipeline_id", MAIN_PIPELINE),
                "responsible_user_id": lead.get("responsible_user_id", 5001),
                "contact_id": contact_id,
                "phone": phone,
                "tags": [tag["name"] for tag in lead["_embedded"].get("tags", [])],
                "notes": [],
            }
            request_id = [str(lead.get("request_id", index))]
            answer.append(
                {"id": lead_id, "contact_id": contact_id, "company_id": None, "request_id": request_id, "merged": False}
            )
        return web.json_response(answer)

    def _add_contact(self, name: str, phone: str, lead_id: int) -> int:
        contact_id = next(self._ids)
        self.contacts[contact_id] = {"id": contact_id, "name": name, "phone": phone, "leads": [lead_id]}
        return contact_id

    async def _patch_leads(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._batch(body)
        if refused is not None:
            return refused
        errors: list[tuple[str, str, str]] = []
        for index, lead in enumerate(body):
            request_id = str(lead.get("request_id", index))
            current = self.leads.get(lead.get("id")) if isinstance(lead.get("id"), int) else None
            if current is None:
                errors.append((request_id, "id", "Lead not found"))
                continue
            errors += self._lead_errors(request_id, lead, current)
        if errors:
            return _validation(errors)
        updated = []
        for lead in body:
            fields = ("name", "price", "status_id", "pipeline_id", "responsible_user_id")
            self.leads[lead["id"]].update({key: lead[key] for key in fields if key in lead})
            updated.append({"id": lead["id"], "updated_at": int(time.time()), "request_id": lead.get("request_id")})
        return web.json_response({"_embedded": {"leads": updated}})

    async def _notes(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._batch(body)
        if refused is not None:
            return refused
        errors: list[tuple[str, str, str]] = []
        for index, note in enumerate(body):
            request_id = str(note.get("request_id", index))
            if note.get("entity_id") not in self.leads:
                errors.append((request_id, "entity_id", "Entity not found"))
            if note.get("note_type") != "common":
                errors.append((request_id, "note_type", "The value you selected is not a valid choice."))
            text = (note.get("params") or {}).get("text")
            if not isinstance(text, str) or not text:
                errors.append((request_id, "params.text", "This value should not be blank."))
        if errors:
            return _validation(errors)
        notes = []
        for note in body:
            note_id = next(self._ids)
            self.leads[note["entity_id"]]["notes"].append(note["params"]["text"])
            notes.append({"id": note_id, "entity_id": note["entity_id"], "request_id": note.get("request_id")})
        return web.json_response({"_total_items": len(notes), "_embedded": {"notes": notes}})

    async def _lead_notes(self, request: web.Request) -> web.Response:
        """A lead's notes, newest first (``filter[note_type]``, ``limit`` ≤ 250); 204 when there are none."""
        lead = self.leads.get(int(request.match_info["id"])) if request.match_info["id"].isdigit() else None
        if lead is None:
            return _problem(404, "Lead not found")
        limit = int(request.query.get("limit", "50"))
        if limit > 250:
            return _problem(400, "limit must be at most 250")
        texts = list(reversed(lead["notes"]))[:limit]
        if not texts:
            return web.Response(status=204)
        notes = [{"entity_id": lead["id"], "note_type": "common", "params": {"text": text}} for text in texts]
        return web.json_response({"_embedded": {"notes": notes}})

    async def _lead(self, request: web.Request) -> web.Response:
        lead = self.leads.get(int(request.match_info["id"])) if request.match_info["id"].isdigit() else None
        if lead is None:
            return web.Response(status=204)
        shown = {key: lead[key] for key in ("id", "name", "price", "status_id", "pipeline_id", "responsible_user_id")}
        contacts = [{"id": lead["contact_id"], "is_main": True}]
        return web.json_response(
            shown | {"_embedded": {"tags": [{"name": t} for t in lead["tags"]], "contacts": contacts}}
        )

    async def _find_contacts(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        with_leads = "leads" in request.query.get("with", "").split(",")
        found = []
        for contact in self.contacts.values():
            # amo's query matches parts of any field; here, of the name or of the phone's digits.
            digits = "".join(ch for ch in contact["phone"] if ch.isdigit())
            if not query or (query not in digits and query.lower() not in contact["name"].lower()):
                continue
            shown: dict[str, Any] = {
                "id": contact["id"],
                "name": contact["name"],
                "custom_fields_values": [
                    {
                        "field_id": 1,
                        "field_name": "Телефон",
                        "field_code": "PHONE",
                        "field_type": "multitext",
                        "values": [{"value": contact["phone"], "enum_id": 1, "enum_code": "WORK"}],
                    }
                ],
            }
            if with_leads:
                shown["_embedded"] = {"leads": [{"id": lead_id} for lead_id in contact["leads"]]}
            found.append(shown)
        if not found:
            return web.Response(status=204)
        return web.json_response({"_page": 1, "_embedded": {"contacts": found}})
