"""`cctv-gender status`: is the daemon running and keeping up (exit 1 when unhealthy)."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.arguments import add_config
from watcher.commands.exit_codes import EXIT_FAILURE, EXIT_OK
from watcher.config import Config
from watcher.service.status import collect_status, render_status

HELP = "is the daemon running and keeping up (exit 1 when unhealthy, for monitoring)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def run(config: Config, args: argparse.Namespace) -> int:
    report = collect_status(config)
    sys.stdout.write(render_status(report, output_format=args.format))
    return EXIT_OK if report.healthy else EXIT_FAILURE
