"""The `cctv-gender` entry point (also `python -m watcher`): the stop signals held first, then the
command line (watcher.commands.command_line) imported and run.

This module imports nothing heavy: importing the commands, the config models, SQLAlchemy and
Alembic takes most of a second, and a SIGTERM (systemd's stop) or a Ctrl-C meanwhile ended
`watch` by the signal or with a KeyboardInterrupt's traceback, before its relay was there to take
it. Held (see watcher.service.signals.held_at_start), it waits until the command takes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from watcher.commands.exit_codes import EXIT_INTERRUPTED
from watcher.service.signals import held_at_start


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; returns its exit code (README: Exit codes)."""
    try:
        with held_at_start():
            from watcher.commands.command_line import run_command_line

            return run_command_line(argv)
    except KeyboardInterrupt:  # a Ctrl-C held until the command ended (a config error, `--help`)
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The whole command line's parser, and each command's own (see command_line.build_parser)."""
    from watcher.commands.command_line import build_parser as build

    return build()
