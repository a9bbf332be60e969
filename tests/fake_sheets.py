"""A fake of Google's token endpoint and the Sheets values API on 127.0.0.1 (aiohttp), for bot.sheets.

It checks the service account's JWT (RS256, with the public key of the key file it was given), keeps the
cells of one sheet in memory, records each write, and fails the next requests on demand (``fail``). Like
Google it allows ``quota`` writes in any rolling minute (of ``clock``) and answers 429 past that, counting
each in ``over_quota``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_CELL = re.compile(r"^([A-Z]+)(\d+)$")


def column_index(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


def service_account_file(path: Any, email: str = "leadbot@test.iam.gserviceaccount.com") -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(json.dumps({"type": "service_account", "client_email": email, "private_key": pem}))
    return key


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class FakeSheets:
    key: rsa.RSAPrivateKey
    spreadsheet_id: str = "sheet-1"
    cells: dict[tuple[int, int], Any] = field(default_factory=dict)  # (row, column), both from 0
    writes: list[float] = field(default_factory=list)  # time of each accepted write
    requests: list[str] = field(default_factory=list)
    failures: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    port: int = 0
    quota: int = 60
    over_quota: int = 0
    clock: Callable[[], float] = time.monotonic
    _runner: web.AppRunner | None = None

    def fail(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after else {}
        self.failures.extend([(status, headers)] * times)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def row(self, number: int) -> list[Any]:
        """Row ``number`` (from 1, as in the sheet), columns A..L."""
        return [self.cells.get((number - 1, col)) for col in range(12)]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/v4/spreadsheets/{sid}/{rest:.*}", self._values)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])  # the port the system picked (public API)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _failure(self) -> web.Response | None:
        if not self.failures:
            return None
        status, headers = self.failures.popleft()
        return web.json_response({"error": {"code": status}}, status=status, headers=headers)

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append("token")
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        header, payload, signature = str(form["assertion"]).split(".")
        self.key.public_key().verify(
            _unb64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        claims = json.loads(_unb64(payload))
        assert claims["scope"] == "https://www.googleapis.com/auth/spreadsheets"
        assert claims["aud"] == f"{self.base}/token" and claims["exp"] > time.time()
        return web.json_response({"access_token": "fake-access-token", "expires_in": 3600})

    def _range(self, a1: str) -> tuple[int, int, int, int]:
        cells = a1.split("!", 1)[1]
        start, _, end = cells.partition(":")
        first, last = _CELL.match(start), _CELL.match(end or start)
        assert first and last, a1
        return (int(first[2]) - 1, column_index(first[1]), int(last[2]) - 1, column_index(last[1]))

    async def _values(self, request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == "Bearer fake-access-token"
        assert request.match_info["sid"] == self.spreadsheet_id
        rest = unquote(request.match_info["rest"])
        self.requests.append(f"{request.method} {rest}")
        failure = self._failure()
        if failure is not None:
            return failure
        if request.method == "GET" and rest.startswith("values/"):
            row, col, _, _ = self._range(rest[len("values/") :])
            value = self.cells.get((row, col))
            return web.json_response({"values": [[value]]} if value is not None else {})
        if request.method == "POST" and rest == "values:batchUpdate":
            now = self.clock()
            if sum(1 for at in self.writes if now - at < 60) >= self.quota:
                self.over_quota += 1
                return web.json_response({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}, status=429)
            body = await request.json()
            assert body["valueInputOption"] == "RAW"
            for item in body["data"]:
                row, col, _, _ = self._range(item["range"])
                for r, values in enumerate(item["values"]):
                    for c, value in enumerate(values):
                        self.cells[(row + r, col + c)] = value
            self.writes.append(now)
            return web.json_response({"totalUpdatedCells": sum(len(i["values"][0]) for i in body["data"])})
        return web.json_response({"error": "unknown"}, status=404)
