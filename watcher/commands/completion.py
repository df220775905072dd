"""`cctv-gender completion bash|zsh|tcsh`: a shell completion script for the whole command line,
generated from the argparse parser by shtab (so it never disagrees with `--help`)."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.arguments import existing_directory_type, output_file_type, path_type
from watcher.commands.exit_codes import EXIT_OK

HELP = "print a shell completion script (bash, zsh or tcsh)"
SHELLS = ("bash", "zsh", "tcsh")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "shell",
        choices=SHELLS,
        help='e.g. `eval "$(cctv-gender completion bash)"` in ~/.bashrc (see README: Command line)',
    )


def run(args: argparse.Namespace) -> int:
    import shtab

    from watcher.commands.main import build_parser

    parser, _ = build_parser()
    _complete_paths(parser, files=shtab.FILE, folders=shtab.DIRECTORY)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return EXIT_OK


def _complete_paths(parser: argparse.ArgumentParser, *, files: object, folders: object) -> None:
    """Offer file names for file options (--config, --plot) and folders for --data, everywhere."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _complete_paths(subparser, files=files, folders=folders)
        elif action.type in (path_type, output_file_type):
            setattr(action, "complete", files)  # noqa: B010  # the attribute shtab reads
        elif action.type is existing_directory_type:
            setattr(action, "complete", folders)  # noqa: B010
