"""Helpers for the HTTP edge tests: an app with other ``[api]`` settings, and a raw ASGI call that shows
how much of the body the app pulled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from api.app import create_app
from api.throttle import FailureLimiter
from bot.config import Settings
from db.engine import Database


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def with_api(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with ``[api]`` keys changed (validated, as a config file would be)."""
    api = settings.api.model_dump() | changes
    api["webhook_secrets"] = {
        name: secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        for name, secret in api["webhook_secrets"].items()
    }
    return settings.model_copy(update={"api": type(settings.api).model_validate(api)})


def edge_app(
    settings: Settings,
    database: Database,
    *,
    limiter: FailureLimiter | None = None,
    **changes: Any,
) -> FastAPI:
    return create_app(with_api(settings, **changes), database, limiter=limiter)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks_pulled: int

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[str, str | bytes]] = (),
    chunks: Sequence[bytes] = (b"",),
    stalls: bool = False,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    query: bytes = b"",
) -> Answer:
    """One request straight into the ASGI app. The body comes in ``chunks``; with ``stalls`` the client
    then never sends the rest (its last chunk says more is coming)."""
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            more = stalls or pulled < len(chunks)
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": more}
        await asyncio.Event().wait()  # nothing more, ever (a disconnect would come after the answer)
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (name.lower().encode("latin-1"), value if isinstance(value, bytes) else value.encode("latin-1"))
            for name, value in headers
        ],
        "client": client,
        "server": ("leadbot.test", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        chunks_pulled=pulled,
    )
