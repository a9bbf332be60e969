"""API tokens from the bot (/token, /token revoke) and from the server (leadbot token issue)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from api.app import create_app
from bot.cli import main
from bot.config import Settings
from db.engine import open_database
from db.models import ApiToken
from db.repositories.tokens import hash_token
from db.uow import UnitOfWorkFactory
from tests.api_support import bearer
from tests.conftest import Harness, Team

TOKEN = re.compile(r"lb_[A-Za-z0-9_\-]{40,}")


def token_in(text: str) -> str:
    match = TOKEN.search(text)
    assert match, text
    return match.group(0)


async def test_token_is_shown_once_and_works(
    harness: Harness, team: Team, client: httpx.AsyncClient, uow_factory: UnitOfWorkFactory
) -> None:
    await harness.send(team.seller, "/token")
    token = token_in(harness.last_text(team.seller.chat_id))

    assert (await client.get("/api/leads/", headers=bearer(token))).status_code == 200
    async with uow_factory() as uow:
        stored = list((await uow.session.scalars(select(ApiToken))).all())
    # Stored hashed, never as the value shown.
    assert [(t.user_id, t.token_hash) for t in stored] == [(team.seller.id, hash_token(token))]
    # A second /token is a different token; the first keeps working.
    await harness.send(team.seller, "/token")
    second = token_in(harness.last_text(team.seller.chat_id))
    assert second != token
    assert (await client.get("/api/leads/", headers=bearer(token))).status_code == 200


async def test_token_revoke_makes_it_fail(harness: Harness, team: Team, client: httpx.AsyncClient) -> None:
    await harness.send(team.mop, "/token")
    first = token_in(harness.last_text(team.mop.chat_id))
    await harness.send(team.mop, "/token")
    second = token_in(harness.last_text(team.mop.chat_id))
    await harness.send(team.seller, "/token")
    other = token_in(harness.last_text(team.seller.chat_id))

    await harness.send(team.mop, "/token revoke")

    assert "2" in harness.last_text(team.mop.chat_id)
    for token in (first, second):
        response = await client.get("/api/leads/", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    # Someone else's token is untouched.
    assert (await client.get("/api/leads/", headers=bearer(other))).status_code == 200
    await harness.send(team.mop, "/token revoke")
    assert harness.last_text(team.mop.chat_id) == "Действующих токенов нет."


async def test_token_is_not_shown_in_a_group(harness: Harness, team: Team, uow_factory: UnitOfWorkFactory) -> None:
    await harness.send(team.admin, "/token", chat_id=-100500)

    assert TOKEN.search(harness.last_text(-100500)) is None
    async with uow_factory() as uow:
        assert (await uow.session.scalars(select(ApiToken))).all() == []


async def test_deactivated_user_cannot_get_a_token(harness: Harness, team: Team) -> None:
    await harness.send(team.inactive, "/token")

    assert TOKEN.search(harness.last_text(team.inactive.chat_id)) is None


def test_cli_token_issue_prints_a_working_token(
    team: Team, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n', encoding="utf-8")

    assert main(["token", "issue", str(team.finance.chat_id), "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip()
    assert TOKEN.fullmatch(token), token

    async def call(token: str) -> int:
        restarted_db = open_database(settings.database.url)
        try:
            app: FastAPI = create_app(settings, restarted_db)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                return (await client.get("/api/leads/", headers=bearer(token))).status_code
        finally:
            await restarted_db.dispose()

    assert asyncio.run(call(token)) == 200
    assert asyncio.run(call(token[:-1] + ("A" if token[-1] != "A" else "B"))) == 401


def test_cli_token_issue_refuses_unknown_and_inactive(
    team: Team, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{settings.database.url}"\n', encoding="utf-8")

    assert main(["token", "issue", "424242", "--config", str(config)]) == 1
    assert main(["token", "issue", str(team.inactive.chat_id), "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "424242" in captured.err
