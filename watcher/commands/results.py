"""`cctv-gender results`: matching rows, newest first, as a table or a streamed export."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.arguments import add_config, positive_int_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.commands.filters import (
    add_filter_arguments,
    add_spreadsheet_safe,
    filters_from,
    spreadsheet_safe_from,
    warn_unseen,
)
from watcher.config import Config
from watcher.store.export import OutputFormat, iter_results, write_results
from watcher.store.opening import open_database
from watcher.store.queries import TimeBasis, count_results

HELP = "result rows, newest first, filtered; tables or exports"
# A table is for a screen; exports get every matching row unless asked.
TABLE_ROWS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    add_filter_arguments(parser, time_basis=TimeBasis.PROCESSED)
    add_spreadsheet_safe(parser)
    parser.add_argument(
        "--limit",
        type=positive_int_type,
        default=None,
        help=f"at most N rows (default: {TABLE_ROWS} for a table, all for exports)",
    )


def run(config: Config, args: argparse.Namespace) -> int:
    filters = filters_from(args, zone=config.display.zone)
    spreadsheet_safe = spreadsheet_safe_from(args)
    engine = open_database(config, migrate=False, read_only=True)
    warn_unseen(engine, filters)
    output_format = OutputFormat(args.format)
    limit = args.limit
    if limit is None and output_format == OutputFormat.TABLE:
        limit = TABLE_ROWS
    shown = write_results(
        iter_results(engine, filters=filters, limit=limit),
        sys.stdout,
        output_format=output_format,
        spreadsheet_safe=spreadsheet_safe,
    )
    if output_format == OutputFormat.TABLE and shown == limit:
        # The table may have been cut: say so, under it (exports are never cut unless asked).
        total = count_results(engine, filters)
        if total > shown:
            print(f"{shown} of {total} shown (--limit N for more, --format csv for all)")
    return EXIT_OK
