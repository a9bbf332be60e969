"""Who the client is, and the access log.

``ForwardedClient``: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from a peer in
``[api] trusted_proxies`` (none by default). The client is then the right-most address of the chain
that is not itself a trusted proxy: whatever a client writes into the header itself stays to the left
of what its proxy appended. (uvicorn's own ``proxy_headers`` is off: it trusted any local peer.)

``AccessLog``: one line per request, ``client "METHOD /path" status duration``, with the path and
never the query string: searches (``q``) carry names and phone digits. Replaces uvicorn's access log,
which printed the query string.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("api.access")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(values: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(value, strict=False) for value in values]


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:5123"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _header(scope: Scope, name: bytes) -> str:
    values = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key.lower() == name]
    return ",".join(values)


class ForwardedClient:
    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str]) -> None:
        self.app = app
        self.trusted = networks(trusted_proxies)

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client's address: ``peer`` unless it is a trusted proxy that forwarded for someone."""
        if not self._trusted(_address(peer)):
            return peer
        client = peer
        for hop in reversed([hop.strip() for hop in forwarded_for.split(",") if hop.strip()]):
            address = _address(hop)
            if address is None:
                break  # garbage in the chain: the last good hop is the best we know
            client = str(address)
            if not self._trusted(address):
                break
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted and scope.get("client"):
            peer = scope["client"][0]
            if self._trusted(_address(peer)):
                scope = dict(scope)
                client = self.client(peer, _header(scope, b"x-forwarded-for"))
                if client != peer:
                    scope["client"] = (client, 0)
                proto = _header(scope, b"x-forwarded-proto").split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
        await self.app(scope, receive, send)


class AccessLog:
    def __init__(self, app: ASGIApp, clock: Any = time.perf_counter) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        status = 500

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            client = scope.get("client")
            access_log.info(
                '%s "%s %s" %d %.1fms',
                client[0] if client else "-",
                scope["method"],
                scope["path"],  # never the query string
                status,
                (self.clock() - started) * 1000,
            )
