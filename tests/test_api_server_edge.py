"""The edge behind real uvicorn on 127.0.0.1: what a raw socket sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from api.app import build_server, create_app
from bot.config import Settings
from db.engine import Database
from tests.conftest import Team
from tests.edge_support import with_api

SECRET = "пароль-сайта-🔑-0123456789"


@pytest.fixture
async def port(settings: Settings, database: Database, free_tcp_port: int) -> AsyncIterator[int]:
    served = with_api(settings, port=free_tcp_port, webhook_secrets={"Сайт": SECRET})
    server = build_server(create_app(served, database), served, embedded=True)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    yield free_tcp_port
    server.should_exit = True
    await task


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_huge_declared_body_is_413_and_the_connection_closed(port: int, team: Team) -> None:
    head = (
        b"POST /api/leads/webhook/%D0%A1%D0%B0%D0%B9%D1%82 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 209715200\r\n"
    )
    answer = await exchange(port, head + b"X-Webhook-Secret: " + SECRET.encode() + b"\r\n\r\n" + b"{" * 1000)

    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413")
    assert b'"code":"payload_too_large"' in rest
    assert b"connection: close" in rest.lower()


async def test_a_utf8_secret_works_over_http(port: int, team: Team) -> None:
    body = '{"client_name": "Анна", "phone_number": "+998905554433"}'.encode()
    head = (
        "POST /api/leads/webhook/%D0%A1%D0%B0%D0%B9%D1%82 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    answer = await exchange(port, head + b"X-Webhook-Secret: " + SECRET.encode() + b"\r\n\r\n" + body)

    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]


async def test_a_refused_caller_with_a_body_is_answered_and_disconnected(port: int, team: Team) -> None:
    # The server neither waits for nor drains the 200 MB it refused to read.
    head = (
        b"POST /api/leads/create HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer lb_guess\r\n"
        b"Content-Type: application/json\r\nContent-Length: 209715200\r\n\r\n"
    )
    answer = await exchange(port, head + b"{" * 1000)

    assert answer.startswith(b"HTTP/1.1 401")
    assert b"connection: close" in answer.lower()
