"""`cctv-gender summary`: counts per camera and per local hour or day, with shares; optionally a plot."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.arguments import add_config, dimensions_type, output_file_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.commands.filters import (
    add_filter_arguments,
    add_spreadsheet_safe,
    filters_from,
    spreadsheet_safe_from,
    warn_unseen,
)
from watcher.config import Config
from watcher.store.export import OutputFormat, write_results
from watcher.store.opening import open_database
from watcher.store.queries import TimeBasis
from watcher.store.summary import COUNT_COLUMNS, summarize

HELP = "counts per camera and per hour or day, with shares"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_filter_arguments(parser, time_basis=TimeBasis.CAPTURED)
    add_spreadsheet_safe(parser)
    parser.add_argument(
        "--by",
        type=dimensions_type,
        default=("camera",),
        metavar="DIMS",
        help="comma-separated: camera, hour, day (default camera); hours and days are the site's "
        "(display.timezone)",
    )
    parser.add_argument(
        "--plot",
        type=output_file_type,
        metavar="FILE.png",
        help="also draw female and male frames over time, per camera",
    )


def run(config: Config, args: argparse.Namespace) -> int:
    zone = config.display.zone
    filters = filters_from(args, zone=zone)
    spreadsheet_safe = spreadsheet_safe_from(args)
    engine = open_database(config, migrate=False, read_only=True)
    warn_unseen(engine, filters)
    by: tuple[str, ...] = args.by
    rows = summarize(engine, filters=filters, by=by, zone=zone)
    columns = (*by, *COUNT_COLUMNS)
    write_results(
        iter(rows),
        sys.stdout,
        output_format=OutputFormat(args.format),
        columns=columns,
        table_columns=columns,
        spreadsheet_safe=spreadsheet_safe,
    )
    if args.plot is not None:
        from watcher.commands.plotting import plot_counts  # matplotlib only when asked

        unit = next((name for name in by if name in ("hour", "day")), "hour")
        plot_rows = summarize(engine, filters=filters, by=("camera", unit), zone=zone)
        left_out = plot_counts(plot_rows, args.plot, unit=unit, zone=zone)
        print(f"plot: {args.plot}", file=sys.stderr)
        if left_out:
            print(
                f"plot: left out {left_out} frames dated at the calendar's ends (year 1 or 9999), which its "
                "time axis cannot hold; the summary counts them",
                file=sys.stderr,
            )
    return EXIT_OK
