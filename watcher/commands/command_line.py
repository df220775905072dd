"""The `cctv-gender` command line (also `python -m watcher`), behind watcher.commands.main: one table
of commands, each a module with `add_arguments(parser)` and `run(config, args)` (Django's
BaseCommand, as paperless uses it).

Command modules import torch, transformers, keras and the pipeline inside `run()` only, so the
commands that only read (`status`, `results`, `summary`, `models list`, `db`) start quickly and
never load them.

Errors an operator can act on are one line on stderr with the README's exit code (tracebacks only
with `--debug` or `logging.level = "debug"`); a reader that goes away (`| head`) ends the command
quietly.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol

from model.registry import RegistryError
from watcher.commands import (
    backfill,
    completion,
    dataset,
    db,
    evaluate,
    fetch,
    models,
    rescore,
    results,
    selftest,
    serve,
    status,
    summary,
    train,
    watch,
)
from watcher.commands.arguments import Parser, UsageError, add_debug
from watcher.commands.exit_codes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from watcher.commands.version import version_text
from watcher.config import Config, ConfigError, find_config, load_config
from watcher.errors import StartupError
from watcher.service.logs import configure_logging
from watcher.service.signals import release_held
from watcher.store.errors import StorageError


class Command(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, config: Config, args: argparse.Namespace) -> int: ...


class ConfiglessCommand(Protocol):
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# In the order `--help` lists them.
COMMANDS: dict[str, Command] = {
    "watch": watch,
    "results": results,
    "summary": summary,
    "status": status,
    "serve": serve,
    "dataset": dataset,
    "backfill": backfill,
    "train": train,
    "evaluate": evaluate,
    "models": models,
    "rescore": rescore,
    "db": db,
    "selftest": selftest,
}
# Commands about the command line itself: they read no config.
WITHOUT_CONFIG: dict[str, ConfiglessCommand] = {
    "completion": completion,
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own (for errors that name the command's usage)."""
    parser: argparse.ArgumentParser = Parser(
        prog="cctv-gender",
        description="Classify perceived gender in CCTV frames dropped into an inbox folder.",
    )
    parser.add_argument(
        "--version", action="store_true", dest="show_version", help="print the version and exit"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="with --version: also torch, transformers, keras"
    )
    add_debug(parser, default=False)
    # Not required by argparse: `cctv-gender --version` names no command (checked in main).
    choices = parser.add_subparsers(dest="command", metavar="COMMAND")
    parsers: dict[str, argparse.ArgumentParser] = {}
    every: dict[str, Command | ConfiglessCommand] = {**COMMANDS, **WITHOUT_CONFIG}
    for name, command in every.items():
        aliases = getattr(command, "ALIASES", ())
        parsers[name] = choices.add_parser(name, help=command.HELP, aliases=aliases)
        parsers[name].set_defaults(command=name)  # `model fetch` runs as `models fetch`
        command.add_arguments(parsers[name])
    return parser, parsers


def run_command_line(argv: Sequence[str] | None = None) -> int:
    """Run one command line, the stop signals held (see watcher.commands.main); returns its exit
    code (README: Exit codes)."""
    # Start-up (torch, transformers, the model) makes hundreds of thousands of objects that live
    # as long as the process, and almost no garbage: the collector's passes over that growing heap
    # were a fifth of `watch`'s start-up CPU (bench/file_cpu.py prints it). Off until a command's
    # work begins (_collector_on), and as it was however the command ends.
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`results | head`): that ends the output, not in error. Python's
        # recipe: point stdout at /dev/null so the flush at exit does not fail again.
        _stdout_to_devnull()
        return EXIT_OK
    finally:
        if collecting:
            gc.enable()
        else:
            gc.disable()


def _run(argv: Sequence[str] | None) -> int:
    parser, parsers = build_parser()
    args = parser.parse_args(argv)
    if args.show_version:
        sys.stdout.write(version_text(verbose=args.verbose))
        return EXIT_OK
    if args.command is None:
        parser.error("name a COMMAND")
    own_parser = parsers[args.command]
    if args.command in WITHOUT_CONFIG:
        configless = WITHOUT_CONFIG[args.command]
        return _guarded(configless, lambda: configless.run(args), own_parser, debug=args.debug)
    if args.command == "models" and args.models_command == "fetch":
        # It prepares the folder a config will name: it needs none itself.
        return _guarded(fetch, lambda: fetch.run(args), own_parser, debug=args.debug)
    try:
        config = load_config(find_config(args.config))
    except ConfigError as error:
        return _config_error(error, debug=args.debug)
    configure_logging(config.logging.level)
    debug = args.debug or config.logging.level.lower() == "debug"
    command = COMMANDS[args.command]
    return _guarded(command, lambda: command.run(config, args), own_parser, debug=debug)


def _collector_on(command: object) -> None:
    """The garbage collector back on before a command's work, unless the command turns it on
    itself once its own start-up is done (`watch`, after loading the model)."""
    if not getattr(command, "TURNS_COLLECTOR_ON", False):
        gc.enable()


def _signals_through(command: object) -> None:
    """The stop and reload signals held since the command line began let through as a command's
    work begins, unless the command does it itself once it handles them (`watch`'s relay)."""
    if not getattr(command, "RELAYS_SIGNALS", False):
        release_held()


def _guarded(
    command: object, work: Callable[[], int], parser: argparse.ArgumentParser, *, debug: bool
) -> int:
    """Run a command's work, the collector on for it (_collector_on): a user's mistake or an
    unusable site is one line on stderr, never a traceback."""
    _collector_on(command)
    try:
        _signals_through(command)  # inside: a Ctrl-C held meanwhile is an interruption, as below
        return work()
    except UsageError as error:
        parser.error(str(error))
    except ConfigError as error:
        return _config_error(error, debug=debug)
    except BrokenPipeError:
        raise  # not an error: see main()
    except (StartupError, StorageError, RegistryError, OSError) as error:
        _traceback(error, debug=debug)
        print(f"cctv-gender: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(file=sys.stderr)  # after the ^C the terminal shows
        return EXIT_INTERRUPTED


def _config_error(error: ConfigError, *, debug: bool) -> int:
    # One line per problem (a config can have several), each naming its file and key.
    _traceback(error, debug=debug)
    for line in str(error).splitlines():
        print(f"cctv-gender: config error: {line}", file=sys.stderr)
    return EXIT_USAGE


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        # "[Errno 13] Permission denied: 'x.png'" reads better as "x.png: Permission denied".
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def _traceback(error: BaseException, *, debug: bool) -> None:
    if debug:
        traceback.print_exception(error, file=sys.stderr)


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (a test's capture)
        pass
