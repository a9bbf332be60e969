"""``leadbot api`` (the HTTP API alone) and ``leadbot token issue <telegram id>``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from api.app import build_server, create_app
from bot.cli import command
from bot.config import Settings
from bot.factory import create_uow_factory
from db.engine import open_database
from db.errors import DomainError
from db.migrate import upgrade


async def serve_api(settings: Settings) -> None:
    database = open_database(settings.database.url, echo=settings.database.echo)
    await upgrade(database.write_engine)
    try:
        server = build_server(create_app(settings, database), settings)
        await server.serve()
    finally:
        await database.dispose()


@command("api", "serve the HTTP API alone ([api] host and port)")
def api_command(settings: Settings, _args: argparse.Namespace) -> int:
    asyncio.run(serve_api(settings))
    return 0


async def issue_token(settings: Settings, telegram_id: int) -> str:
    """A new personal token for the member with ``telegram_id``; raises LookupError or DomainError."""
    database = open_database(settings.database.url, echo=settings.database.echo)
    await upgrade(database.write_engine)
    try:
        async with create_uow_factory(settings, database)() as uow:
            user = await uow.users.by_telegram_id(telegram_id)
            if user is None:
                raise LookupError(f"no team member has Telegram id {telegram_id}")
            token = await uow.tokens.issue(user)
            await uow.commit()
            return token
    finally:
        await database.dispose()


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="print a new personal API token for a team member")
    issue.add_argument("telegram_id", type=int, help="the member's Telegram user id")
    # Also accepted after the action: `leadbot token issue 123 --config prod.toml`.
    issue.add_argument("--config", default=argparse.SUPPRESS, help="path to the TOML config")


@command("token", "API tokens: `token issue <telegram id>` prints a new one", _token_arguments)
def token_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        token = asyncio.run(issue_token(settings, args.telegram_id))
    except (LookupError, DomainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
