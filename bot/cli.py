"""``leadbot`` command line: ``run`` (the bot), ``doctor``, ``sync`` (a CRM integration's first sync), and
the subcommands features add (``api``, ``token``).

It answers at once: this module imports only the standard library, and each command imports what it
uses when it runs (aiogram alone takes seconds to import), so ``--help`` and a mistake in the config
cost a fraction of a second. A person's mistake (a config path, a key, the token, the database URL) is
one line on stderr and exit code 2, never a traceback; every command first says which config file it
uses, on stderr, so stdout stays what the command prints (a token, the doctor's report).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Settings

Command = Callable[["Settings", argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None] | None]] = {}
# Commands that print a result and stop: they log warnings only (the services log what they do).
_ONE_SHOT = frozenset({"doctor", "token", "copy-db", "sync", "migrate"})


class CommandError(Exception):
    """A problem worded for a person: printed as one line on stderr, the command exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def command(
    name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Command], Command]:
    """Register a subcommand; features (the API, tokens) add theirs next to their code.

    A module that registers commands must stay cheap to import: it is imported for ``--help`` too, so
    what a command needs is imported inside the command.
    """

    def decorate(func: Command) -> Command:
        _COMMANDS[name] = (help_text, func, arguments)
        return func

    return decorate


def keep_on_one_core(settings: Settings) -> None:
    """``[database] one_core``: on SQLite, this process's threads share one core (``db.engine.one_core``).

    A serving command calls it before its threads start, so that every thread inherits it.
    """
    if not settings.database.one_core:
        return
    import logging

    from db.engine import one_core

    core = one_core(settings.database.url)
    if core is not None:
        logging.getLogger("leadbot").info("SQLite: this process keeps its threads on CPU core %d", core)


def run_serving(main: Coroutine[Any, Any, None]) -> None:
    """Run a serving command's coroutine (``leadbot run``, ``leadbot api``) on uvloop where it is installed.

    uvloop (libuv under asyncio's own interface) runs the loop's callbacks, its sockets and the wake-ups
    from aiosqlite's thread in C: the same code, less of the event loop's time per update
    (docs/benchmarks.md). It is a dependency everywhere it builds (not on Windows); without it the
    command runs on asyncio's own loop. The async tests run on uvloop too (tests/conftest.py).
    """
    import asyncio

    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def freeze_startup_objects() -> None:
    """Leave what start-up built out of every later garbage collection (``gc.freeze``).

    aiogram's and pydantic's models, SQLAlchemy, the routers, the dispatcher and the HTTP app are some
    400,000 objects that live as long as the process. Python's full collection walks every one of them,
    200–300 ms on a 2-vCPU VM, and under a burst of updates one comes every few seconds, stopping every
    answer in flight. Frozen, they are never walked again; what the bot allocates from then on is
    collected as before. Called once everything is built (``run_bot``'s ``ready``): frozen right after
    the imports instead, the dispatcher and the HTTP app (60,000 objects) were left to the full
    collections, 20–35 ms each.
    """
    import gc

    gc.collect()
    gc.freeze()


@command("run", "start the bot (long polling)")
def run_command(settings: Settings, _args: argparse.Namespace) -> int:
    import asyncio

    from bot.doctor import missing_sqlite_folder, token_problem, verify_token

    # The token is checked before anything is created: a wrong one leaves no database behind.
    problem = token_problem(settings)
    folder = missing_sqlite_folder(settings.database.url)
    if problem is None and folder is not None:
        raise CommandError(folder, 2)
    if problem is None:
        problem = asyncio.run(verify_token(settings)).problem
    if problem is not None:
        raise CommandError(problem.line, problem.exit_code)

    from bot.runner import run_bot

    # Once the checks passed (the token check's resolver threads are joined when its loop ends) and
    # before the bot's own threads start.
    keep_on_one_core(settings)
    run_serving(run_bot(settings, ready=freeze_startup_objects))
    return 0


def _copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="the database to copy into, e.g. postgresql+asyncpg://leadbot@127.0.0.1/leadbot")


@command(
    "copy-db",
    "copy this configuration's database into another (SQLite to PostgreSQL), which must be empty",
    _copy_arguments,
)
def copy_db_command(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from db.copy import TargetNotEmpty, copy_database
    from db.engine import open_database

    try:
        target = open_database(args.target)
    except ValueError as exc:
        raise CommandError(f"error: target: {exc}", 2) from None

    async def copy() -> int:
        source = open_database(settings.database.url)
        try:
            copied = await copy_database(source, target)
        except TargetNotEmpty as exc:
            raise CommandError(f"error: {exc}; nothing was copied", 1) from None
        finally:
            await source.dispose()
            await target.dispose()
        for item in copied:
            print(f"{item.table}: {item.rows}")
        return 0

    return asyncio.run(copy())


@command("migrate", "upgrade the database's schema to this version's head and exit (run and api do it at start too)")
def migrate_command(settings: Settings, _args: argparse.Namespace) -> int:
    """Once before several instances start (a deployment's one-shot step), so they never race to migrate."""
    import asyncio

    from bot.doctor import missing_sqlite_folder
    from db.engine import open_database
    from db.migrate import upgrade

    folder = missing_sqlite_folder(settings.database.url)
    if folder is not None:
        raise CommandError(folder, 2)

    async def migrate() -> None:
        database = open_database(settings.database.url, pooled=False)
        try:
            await upgrade(database.write_engine)
        finally:
            await database.dispose()

    asyncio.run(migrate())
    print("the database's schema is at its head", file=sys.stderr)
    return 0


@command("doctor", "check the configuration end to end: token, database, Redis, the API port")
def doctor_command(settings: Settings, _args: argparse.Namespace) -> int:
    import asyncio

    from bot.doctor import run_checks

    return asyncio.run(run_checks(settings, out=sys.stdout))


def _sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("integration", choices=["amocrm", "bitrix24", "meta"], help="the integration to sync")


@command(
    "sync",
    "the first sync of a CRM integration: queue every lead not sent there yet, then send them (Ctrl-C stops; "
    "run again to go on)",
    _sync_arguments,
)
def sync_command(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from bot.doctor import missing_sqlite_folder

    name: str = args.integration
    if name not in settings.integrations:
        raise CommandError(f"error: {name} is not configured: set up its [{name}] section (docs/integrations.md)", 2)
    folder = missing_sqlite_folder(settings.database.url)
    if folder is not None:
        raise CommandError(folder, 2)
    return asyncio.run(sync_integration(settings, name))


async def sync_integration(settings: Settings, name: str, *, every: float = 5.0) -> int:
    """``leadbot sync``: the first Ctrl-C lets the batch on its way finish, a second one stops at once."""
    import asyncio
    import signal

    from bot.integrations import first_sync
    from bot.units import create_uow_factory
    from db.engine import open_database
    from db.migrate import upgrade

    database = open_database(settings.database.url, echo=settings.database.echo)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = asyncio.current_task()

    def interrupt() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
            return
        print(f"{name}: stopping after the batch on its way (Ctrl-C again to stop at once)", file=sys.stderr)
        stop.set()

    with_signals = True
    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError):  # not on this platform, or not the main thread
        with_signals = False
    try:
        await upgrade(database.write_engine)
        report = await first_sync(settings, create_uow_factory(settings, database), name, every=every, stop=stop)
        return report.exit_code
    except asyncio.CancelledError:
        print(f"{name}: stopped at once; jobs being sent are taken again after their lease", file=sys.stderr)
        return 130
    finally:
        if with_signals:
            loop.remove_signal_handler(signal.SIGINT)
        await database.dispose()


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8765, help="the page's port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")


@command(
    "demo",
    "try the bot without Telegram: the real bot, a seeded temporary database, a chat page on 127.0.0.1",
    _demo_arguments,
)
def demo_command(_settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from bot.demo.run import serve

    if not 0 <= args.port <= 65535:
        raise CommandError("error: --port must be 0 to 65535", 2)
    print("demo: its own settings and a temporary database; the config file is not used", file=sys.stderr)
    try:
        asyncio.run(serve(args.port, open_browser=not args.no_browser))
    except OSError as exc:
        raise CommandError(f"error: cannot start the demo on 127.0.0.1:{args.port}: {exc.strerror or exc}", 2) from None
    return 0


def _load_plugins() -> None:
    # Subcommands defined beside their features register themselves on import.
    for module in ("api.cli",):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leadbot",
        description="LeadBot: a Telegram-bot CRM for sales teams",
        epilog="The config file is --config PATH, else $LEADBOT_CONFIG, else ./config.toml.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _func, arguments) in _COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        # No default here: a path given explicitly must exist, the implicit config.toml may be absent.
        child.add_argument(
            "--config", default=None, help="path to the TOML config (default: $LEADBOT_CONFIG, else ./config.toml)"
        )
        if arguments is not None:
            arguments(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _load_plugins()
    args = build_parser().parse_args(argv)

    import logging

    from bot.config import ConfigError, find_config, load_settings

    level = logging.WARNING if args.command in _ONE_SHOT else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        source = find_config(args.config)
        print(source.describe(), file=sys.stderr)
        settings = load_settings(source.path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    _help, func, _arguments = _COMMANDS[args.command]
    try:
        return func(settings, args)
    except KeyboardInterrupt:
        return 0
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except Exception as exc:
        from bot.doctor import explain_database_error

        problem = explain_database_error(exc, settings.database.url)
        if problem is None:
            raise
        print(problem.line, file=sys.stderr)
        return problem.exit_code


if __name__ == "__main__":
    sys.exit(main())
