"""The `cctv-gender` command line (also `python -m watcher`): one table of commands, each a module
with `add_arguments(parser)` and `run(config, args)` (Django's BaseCommand, as paperless uses it).

Command modules import torch, transformers, keras and the pipeline inside `run()` only, so the
commands that only read (`status`, `results`, `summary`, `db`) start quickly and never load them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from watcher.commands import db, evaluate, models, rescore, results, status, summary, train, watch
from watcher.commands.arguments import UsageError
from watcher.commands.exit_codes import EXIT_FAILURE, EXIT_USAGE
from watcher.config import Config, ConfigError, find_config, load_config
from watcher.errors import StartupError
from watcher.service.logs import configure_logging
from watcher.store.errors import StorageError


class Command(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, config: Config, args: argparse.Namespace) -> int: ...


# In the order `--help` lists them.
COMMANDS: dict[str, Command] = {
    "watch": watch,
    "results": results,
    "summary": summary,
    "status": status,
    "train": train,
    "evaluate": evaluate,
    "models": models,
    "rescore": rescore,
    "db": db,
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own (for errors that name the command's usage)."""
    parser = argparse.ArgumentParser(
        prog="cctv-gender",
        description="Classify perceived gender in CCTV frames dropped into an inbox folder.",
    )
    choices = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, command in COMMANDS.items():
        parsers[name] = choices.add_parser(name, help=command.HELP)
        command.add_arguments(parsers[name])
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(find_config(args.config))
    except ConfigError as error:
        return _config_error(error)
    configure_logging(config.logging.level)
    try:
        return COMMANDS[args.command].run(config, args)
    except UsageError as error:
        parsers[args.command].error(str(error))
    except ConfigError as error:
        return _config_error(error)
    except (StartupError, StorageError) as error:
        print(f"cctv-gender: error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _config_error(error: ConfigError) -> int:
    # One line per problem (a config can have several), each naming its file and key.
    for line in str(error).splitlines():
        print(f"cctv-gender: config error: {line}", file=sys.stderr)
    return EXIT_USAGE
