"""``leadbot`` command line: ``run`` (the bot), and room for ``api`` and ``token`` subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence

from bot.config import ConfigError, Settings, load_settings

log = logging.getLogger("leadbot")

NO_TOKEN = (
    "config error: bot.token: not set. Create a bot with @BotFather in Telegram (/newbot), then put its "
    'token into config.toml as [bot] token = "..." or set LEADBOT_BOT__TOKEN.'
)

Command = Callable[[Settings, argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None] | None]] = {}


def command(
    name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Command], Command]:
    """Register a subcommand; features (the API, tokens) add theirs next to their code."""

    def decorate(func: Command) -> Command:
        _COMMANDS[name] = (help_text, func, arguments)
        return func

    return decorate


@command("run", "start the bot (long polling)")
def run_command(settings: Settings, _args: argparse.Namespace) -> int:
    if settings.bot.token is None or not settings.bot.token.get_secret_value().strip():
        print(NO_TOKEN, file=sys.stderr)
        return 2
    from bot.runner import run_bot

    asyncio.run(run_bot(settings))
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
    parser = argparse.ArgumentParser(prog="leadbot", description="LeadBot: a Telegram-bot CRM for sales teams")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _func, arguments) in _COMMANDS.items():
        child = sub.add_parser(name, help=help_text)
        # No default here: a path given explicitly must exist, the implicit config.toml may be absent.
        child.add_argument("--config", default=None, help="path to the TOML config (default: config.toml)")
        if arguments is not None:
            arguments(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _load_plugins()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config or "config.toml", required=args.config is not None)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    _help, func, _arguments = _COMMANDS[args.command]
    try:
        return func(settings, args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
