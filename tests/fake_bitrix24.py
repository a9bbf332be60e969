"""A fake Bitrix24 portal on 127.0.0.1 (aiohttp): the REST methods the adapter calls, behind a webhook.

``POST /rest/<user>/<code>/<method>[.json]`` with a JSON body, as a real incoming webhook takes it. It
keeps Bitrix24's documented limits, so a test that breaks one fails here as it would there:

- a leaky bucket per portal: each request adds one, ``drain_rate`` leak away a second, and past
  ``bucket_size`` the answer is 503 ``QUERY_LIMIT_EXCEEDED`` (counted in ``limit_errors``);
- ``batch``: at most 50 commands, none of them a batch, each a ``method?query`` string read as PHP reads
  a query (``fields[PHONE][0][VALUE]=...``); its answer is ``result``/``result_error`` per command key,
  an empty list where PHP has an empty array;
- a wrong webhook code is a 401 ``INVALID_CREDENTIALS``;
- the fields' shape is checked more strictly than Bitrix24 does (it ignores unknown fields; here they are
  a 400), so a typo in the adapter cannot pass unseen.

State: ``leads`` (by id), ``comments``, ``requests`` (every HTTP request: method and body; ``arrivals``
its ``time.monotonic()`` on arrival) and ``commands`` (every method run, a batch's commands included).
``fail_next``, ``outage`` and ``lose_next_answers`` make it misbehave; ``move`` changes a lead there and
returns the ONCRMLEADUPDATE event it would post.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

WEBHOOK_USER = 1
WEBHOOK_CODE = "secretcode4tests"
APPLICATION_TOKEN = "app-token-for-tests"
DOMAIN = "leadbot-test.bitrix24.com"

DEFAULT_STATUS_IDS = frozenset({"NEW", "IN_PROCESS", "PROCESSED", "JUNK", "CONVERTED"})
DEFAULT_SOURCE_IDS = frozenset(
    {
        "CALL",
        "EMAIL",
        "WEB",
        "ADVERTISING",
        "PARTNER",
        "RECOMMENDATION",
        "TRADE_SHOW",
        "WEBFORM",
        "CALLBACK",
        "RC_GENERATOR",
        "STORE",
        "OTHER",
    }
)
PHONE_TYPES = frozenset({"WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"})
LEAD_FIELDS = frozenset(
    {
        "TITLE",
        "NAME",
        "PHONE",
        "SOURCE_ID",
        "SOURCE_DESCRIPTION",
        "STATUS_ID",
        "ASSIGNED_BY_ID",
        "OPPORTUNITY",
        "CURRENCY_ID",
        "COMMENTS",
    }
)
MAX_BATCH = 50
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


class CommandError(Exception):
    """A method's refusal: its HTTP status and Bitrix24's error body."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": error, "error_description": description}


def _invalid(description: str) -> CommandError:
    return CommandError(400, "ERROR_CORE", description)


def _not_found() -> CommandError:
    return CommandError(400, "", "Not found")


def parse_php_query(query: str) -> dict[str, Any]:
    """A query string as PHP's parse_str reads it: ``a[b][0]=x`` -> {"a": {"b": ["x"]}}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise _invalid(f"unreadable parameter {key!r}")
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _invalid(f"parameter {key!r} is both a value and an array")
        node[path[-1]] = value
    return _lists(root)


def _lists(value: Any) -> Any:
    """PHP arrays with keys 0..n-1 are lists."""
    if not isinstance(value, dict):
        return value
    items = {key: _lists(item) for key, item in value.items()}
    if items and list(items) == [str(index) for index in range(len(items))]:
        return list(items.values())
    return items


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


class FakeBitrix24:
    def __init__(
        self,
        *,
        bucket_size: int = 50,
        drain_rate: float = 2.0,
        application_token: str = APPLICATION_TOKEN,
        webhook_code: str = WEBHOOK_CODE,
    ) -> None:
        self.bucket_size = bucket_size
        self.drain_rate = drain_rate
        self.application_token = application_token
        self.webhook_code = webhook_code
        self.status_ids = set(DEFAULT_STATUS_IDS)
        self.source_ids = set(DEFAULT_SOURCE_IDS)
        self.leads: dict[int, dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request in ``requests``
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.limit_errors = 0
        self.delay = 0.0  # seconds before every answer
        self._ids = itertools.count(1)
        self._comment_ids = itertools.count(1)
        self._level = 0.0
        self._drained_at = time.monotonic()
        self._failures: deque[tuple[int, str]] = deque()
        self._answered_before_failing = 0
        self._outage_until = 0.0
        self._lose_answers = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- what a test sets up or asks

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rest/{WEBHOOK_USER}/{self.webhook_code}/"

    def fail_next(
        self, status: int = 500, times: int = 1, error: str = "INTERNAL_SERVER_ERROR", *, after: int = 0
    ) -> None:
        """The next ``times`` requests (once ``after`` more have been answered) answer ``status`` with
        ``error``, doing nothing."""
        self._failures.extend([(status, error)] * times)
        self._answered_before_failing = after

    def outage(self, seconds: float) -> None:
        """For ``seconds`` every request answers a 503 page from the proxy in front (not JSON)."""
        self._outage_until = time.monotonic() + seconds

    def lose_next_answers(self, times: int = 1) -> None:
        """The next ``times`` requests are carried out, then answered 502 (the answer lost on its way)."""
        self._lose_answers += times

    def add_lead(self, phone: str, *, title: str = "Made in Bitrix24", status_id: str = "NEW") -> int:
        lead_id = next(self._ids)
        self.leads[lead_id] = {
            "ID": lead_id,
            "TITLE": title,
            "STATUS_ID": status_id,
            "SOURCE_ID": "CALL",
            "ASSIGNED_BY_ID": WEBHOOK_USER,
            "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
        }
        return lead_id

    def move(self, lead_id: int, status_id: str) -> str:
        """A salesperson moves the lead there: the form body of the ONCRMLEADUPDATE event posted."""
        self.leads[lead_id]["STATUS_ID"] = status_id
        return urlencode(
            {
                "event": "ONCRMLEADUPDATE",
                "event_handler_id": "7",
                "data[FIELDS][ID]": str(lead_id),
                "ts": str(int(time.time())),
                "auth[domain]": DOMAIN,
                "auth[client_endpoint]": f"https://{DOMAIN}/rest/",
                "auth[server_endpoint]": "https://oauth.bitrix.info/rest/",
                "auth[member_id]": "a223c6b3710f85df22e9377d6c4f7553",
                "auth[application_token]": self.application_token,
            }
        )

    def calls(self, method: str) -> int:
        """How many times ``method`` ran, inside a batch or on its own."""
        return sum(1 for name, _ in self.commands if name == method)

    # --- the server

    async def __aenter__(self) -> FakeBitrix24:
        app = web.Application()
        app.router.add_post("/rest/{user}/{code}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].removesuffix(".json")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.requests.append((method, body))
        self.arrivals.append(time.monotonic())
        if self.delay:
            await asyncio.sleep(self.delay)
        if time.monotonic() < self._outage_until:
            return web.Response(status=503, text="<html><body>503 Service Temporarily Unavailable</body></html>")
        if self._failures and self._answered_before_failing:
            self._answered_before_failing -= 1
        elif self._failures:
            status, error = self._failures.popleft()
            return web.json_response({"error": error, "error_description": "Simulated failure"}, status=status)
        if not self._admit():
            self.limit_errors += 1
            return web.json_response(
                {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, status=503
            )
        if (request.match_info["user"], request.match_info["code"]) != (str(WEBHOOK_USER), self.webhook_code):
            return web.json_response(
                {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}, status=401
            )
        if not isinstance(body, dict):
            return web.json_response({"error": "", "error_description": "Body is not a JSON object"}, status=400)
        try:
            result = self._batch(body) if method == "batch" else self._execute(method, body)
        except CommandError as refusal:
            return web.json_response(refusal.body, status=refusal.status)
        if self._lose_answers:
            self._lose_answers -= 1
            return web.Response(status=502, text="Bad Gateway")
        return web.json_response({"result": result, "time": {"start": time.time(), "finish": time.time()}})

    def _admit(self) -> bool:
        """The leaky bucket: one more request, unless it would overflow (a refused one is not counted)."""
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._drained_at) * self.drain_rate)
        self._drained_at = now
        # A hair of slack: the sender's timer and ours read the same clock a few microseconds apart.
        if self._level + 1 > self.bucket_size + 0.01:
            return False
        self._level += 1
        return True

    def _batch(self, body: dict[str, Any]) -> dict[str, Any]:
        commands = body.get("cmd")
        if not isinstance(commands, dict) or not commands:
            raise _invalid("cmd must be a non-empty object")
        if len(commands) > MAX_BATCH:
            raise CommandError(400, "ERROR_BATCH_LENGTH_EXCEEDED", f"Max batch length exceeded ({MAX_BATCH})")
        halt = str(body.get("halt", 0)) not in ("0", "false", "False", "")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key, command in commands.items():
            if not isinstance(command, str):
                raise _invalid(f"command {key} is not a string")
            method, _, query = command.partition("?")
            try:
                if method == "batch":
                    raise CommandError(400, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
                results[key] = self._execute(method, parse_php_query(query))
            except CommandError as refusal:
                errors[key] = refusal.body
                if halt:
                    break
        # PHP's json_encode: an empty array is [], not {}.
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": [],
            "result_next": [],
            "result_time": [],
        }

    # --- the methods

    def _execute(self, method: str, params: dict[str, Any]) -> Any:
        self.commands.append((method, params))
        handler = {
            "crm.lead.add": self._lead_add,
            "crm.lead.update": self._lead_update,
            "crm.lead.get": self._lead_get,
            "crm.duplicate.findbycomm": self._find_by_comm,
            "crm.timeline.comment.add": self._comment_add,
            "crm.timeline.comment.list": self._comment_list,
        }.get(method)
        if handler is None:
            raise CommandError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        return handler(params)

    def _lead_add(self, params: dict[str, Any]) -> int:
        fields = self._checked_fields(params.get("fields"), creating=True)
        register = (params.get("params") or {}).get("REGISTER_SONET_EVENT", "Y")
        if register not in ("Y", "N"):
            raise _invalid("params[REGISTER_SONET_EVENT] must be Y or N")
        lead_id = next(self._ids)
        self.leads[lead_id] = {
            "ID": lead_id,
            "STATUS_ID": "NEW",
            "SOURCE_ID": "OTHER",
            "ASSIGNED_BY_ID": WEBHOOK_USER,
            **fields,
        }
        return lead_id

    def _lead_update(self, params: dict[str, Any]) -> bool:
        lead = self.leads.get(self._id(params))
        if lead is None:
            raise _not_found()
        fields = self._checked_fields(params.get("fields"), creating=False)
        # A multifield value without an ID there is added beside the ones the lead has.
        phones = fields.pop("PHONE", [])
        lead.update(fields)
        lead["PHONE"] = [*lead.get("PHONE", []), *phones]
        return True

    def _lead_get(self, params: dict[str, Any]) -> dict[str, Any]:
        lead = self.leads.get(self._id(params))
        if lead is None:
            raise _not_found()
        answer = {key: value for key, value in lead.items() if key not in ("PHONE", "OPPORTUNITY")}
        answer = {key: str(value) if isinstance(value, int) else value for key, value in answer.items()}
        answer["OPPORTUNITY"] = f"{lead.get('OPPORTUNITY') or 0:.2f}"
        answer["PHONE"] = [
            {"ID": str(index + 1), "VALUE_TYPE": phone["VALUE_TYPE"], "VALUE": phone["VALUE"], "TYPE_ID": "PHONE"}
            for index, phone in enumerate(lead.get("PHONE", []))
        ]
        return answer

    def _find_by_comm(self, params: dict[str, Any]) -> dict[str, list[int]] | list[Any]:
        if params.get("type") != "PHONE":
            raise _invalid("type must be EMAIL or PHONE (only PHONE here)")
        values = params.get("values")
        if not isinstance(values, list) or not values or len(values) > 20:
            raise _invalid("values must be a list of 1 to 20 phones")
        if params.get("entity_type", "LEAD") != "LEAD":
            raise _invalid("only LEAD duplicates here")
        wanted = {_digits(str(value)) for value in values}
        found = sorted(
            lead_id
            for lead_id, lead in self.leads.items()
            if any(_digits(phone["VALUE"]) in wanted for phone in lead.get("PHONE", []))
        )[:20]
        # Nothing found is PHP's empty array.
        return {"LEAD": found} if found else []

    def _comment_add(self, params: dict[str, Any]) -> int:
        fields = params.get("fields")
        if not isinstance(fields, dict):
            raise _invalid("fields must be an object")
        if str(fields.get("ENTITY_TYPE", "")).lower() != "lead":
            raise _invalid("ENTITY_TYPE must be lead here")
        if not str(fields.get("COMMENT", "")).strip():
            raise _invalid("COMMENT is required")
        lead_id = self._id({"id": fields.get("ENTITY_ID")})
        if lead_id not in self.leads:
            raise _not_found()
        comment_id = next(self._comment_ids)
        self.comments.append(
            {"ID": comment_id, "ENTITY_ID": lead_id, "ENTITY_TYPE": "lead", "COMMENT": fields["COMMENT"]}
        )
        return comment_id

    def _comment_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """A lead's timeline comments, newest first, the first page of 50 (``filter`` ENTITY_ID/TYPE)."""
        flt = params.get("filter")
        if not isinstance(flt, dict) or str(flt.get("ENTITY_TYPE", "")).lower() != "lead":
            raise _invalid("filter[ENTITY_TYPE] must be lead here")
        lead_id = self._id({"id": flt.get("ENTITY_ID")})
        found = [c for c in reversed(self.comments) if c["ENTITY_ID"] == lead_id]
        return [{"ID": c["ID"], "COMMENT": c["COMMENT"]} for c in found[:50]]

    def _id(self, params: dict[str, Any]) -> int:
        value = params.get("id", params.get("ID"))
        if isinstance(value, bool) or not str(value).isdigit() or int(str(value)) < 1:
            raise CommandError(400, "", "ID is not defined or invalid")
        return int(str(value))

    def _checked_fields(self, fields: Any, *, creating: bool) -> dict[str, Any]:
        """The fields as stored; a 400 for any that Bitrix24 would not take as the adapter means it."""
        if not isinstance(fields, dict):
            raise _invalid("fields must be an object")
        unknown = set(fields) - LEAD_FIELDS
        if unknown:
            raise _invalid(f"unknown fields: {', '.join(sorted(unknown))}")
        stored: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "PHONE":
                stored[name] = self._phones(value)
            elif name == "STATUS_ID":
                if value not in self.status_ids:
                    raise _invalid(f"STATUS_ID {value!r} is not a lead stage here")
                stored[name] = value
            elif name == "SOURCE_ID":
                if value not in self.source_ids:
                    raise _invalid(f"SOURCE_ID {value!r} is not a source here")
                stored[name] = value
            elif name == "ASSIGNED_BY_ID":
                if isinstance(value, bool) or not str(value).isdigit():
                    raise _invalid("ASSIGNED_BY_ID must be a user id")
                stored[name] = int(str(value))
            elif name == "OPPORTUNITY":
                try:
                    stored[name] = None if value == "" else float(value)
                except (TypeError, ValueError):
                    raise _invalid("OPPORTUNITY must be a number") from None
            elif name == "CURRENCY_ID":
                if not (isinstance(value, str) and re.fullmatch(r"[A-Z]{3}", value)):
                    raise _invalid("CURRENCY_ID must be a currency code")
                stored[name] = value
            else:
                if not isinstance(value, str):
                    raise _invalid(f"{name} must be a string")
                stored[name] = value
        if (creating or "TITLE" in stored) and not str(stored.get("TITLE", "")).strip():
            raise _invalid("TITLE is required")
        return stored

    def _phones(self, value: Any) -> list[dict[str, str]]:
        if not isinstance(value, list) or not value:
            raise _invalid("PHONE must be a list of {VALUE, VALUE_TYPE}")
        phones = []
        for item in value:
            if not isinstance(item, dict) or set(item) != {"VALUE", "VALUE_TYPE"}:
                raise _invalid("PHONE must be a list of {VALUE, VALUE_TYPE}")
            if not isinstance(item["VALUE"], str) or not _digits(item["VALUE"]):
                raise _invalid("PHONE VALUE must be a phone number")
            if item["VALUE_TYPE"] not in PHONE_TYPES:
                raise _invalid(
                    f"PHONE VALUE_TYPE {item['VALUE_TYPE']!r} is not one of {', '.join(sorted(PHONE_TYPES))}"
                )
            phones.append({"VALUE": item["VALUE"], "VALUE_TYPE": item["VALUE_TYPE"]})
        return phones
