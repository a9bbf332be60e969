"""``leadbot api`` (the HTTP API alone) and ``leadbot token issue <telegram id>``.

Imported for ``leadbot --help`` too: what the commands need is imported inside them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.cli import command, freeze_startup_objects, keep_on_one_core, run_serving

if TYPE_CHECKING:
    from bot.config import Settings
    from db.models import User
    from db.uow import UnitOfWork


async def serve_api(settings: Settings, ready: Callable[[], None] | None = None) -> None:
    """Serve until stopped; ``ready`` is called once the app and its server are built, before serving."""
    from api.app import build_server, close_app, create_app
    from db.engine import open_database
    from db.migrate import upgrade

    database = open_database(settings.database.url, echo=settings.database.echo)
    await upgrade(database.write_engine)
    app = create_app(settings, database)
    try:
        if settings.meta.enabled:
            app.state.meta_fetcher.kick()  # Meta leads recorded before a restart
        server = build_server(app, settings)
        if ready is not None:
            ready()
        await server.serve()
    finally:
        await close_app(app)
        await database.dispose()


@command("api", "serve the HTTP API alone ([api] host and port)")
def api_command(settings: Settings, _args: argparse.Namespace) -> int:
    keep_on_one_core(settings)
    run_serving(serve_api(settings, ready=freeze_startup_objects))
    return 0


async def issue_token(settings: Settings, telegram_id: int) -> str:
    """A new personal token for the member with ``telegram_id``; raises LookupError or DomainError.

    An admin named in ``[access] admins`` gets one even before writing to the bot. For anyone else a
    SQLite file that does not exist is not created: there can be nobody in it.
    """
    from bot.doctor import sqlite_file
    from db.engine import open_database
    from db.migrate import upgrade
    from db.uow import UnitOfWorkFactory

    path = sqlite_file(settings.database.url)
    if telegram_id not in settings.access.admins and path is not None and not path.exists():
        raise LookupError(f"no team member has Telegram id {telegram_id}: the database {path} does not exist yet")
    database = open_database(settings.database.url, echo=settings.database.echo)
    await upgrade(database.write_engine)
    try:
        # Issuing a token changes no lead, so it raises no domain event and needs no notifier
        # (bot.factory.create_uow_factory installs one, and importing it costs seconds of aiogram).
        async with UnitOfWorkFactory(database, settings)() as uow:
            user = await _member(uow, telegram_id)
            token = await uow.tokens.issue(user)
            await uow.commit()
            return token
    finally:
        await database.dispose()


async def _member(uow: UnitOfWork, telegram_id: int) -> User:
    from db.repositories.users import TelegramProfile

    user = await uow.users.by_telegram_id(telegram_id)
    if user is None:
        # An admin from the config who has not written to the bot yet: their row is made as /start makes
        # it; the name arrives with their first message.
        user = await uow.users.ensure_config_admin(TelegramProfile(telegram_id=telegram_id, first_name=""))
    if user is None:
        raise LookupError(
            f"no team member has Telegram id {telegram_id}: they join by an /invite link, "
            "or add the id to [access] admins"
        )
    return user


def _token_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    issue = actions.add_parser("issue", help="print a new personal API token for a team member")
    issue.add_argument("telegram_id", type=int, help="the member's Telegram user id")
    # Also accepted after the action: `leadbot token issue 123 --config prod.toml`.
    issue.add_argument("--config", default=argparse.SUPPRESS, help="path to the TOML config")


@command("token", "API tokens: `token issue <telegram id>` prints a new one", _token_arguments)
def token_command(settings: Settings, args: argparse.Namespace) -> int:
    from bot.cli import CommandError
    from bot.doctor import missing_sqlite_folder
    from db.errors import DomainError

    folder = missing_sqlite_folder(settings.database.url)
    if folder is not None:
        raise CommandError(folder, 2)
    try:
        token = asyncio.run(issue_token(settings, args.telegram_id))
    except (LookupError, DomainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
