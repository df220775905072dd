"""`cctv-gender results` and `cctv-gender summary`: filters, formats, the unseen-camera hint."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watcher.config import Config
from watcher.store.queries import ResultFilter, known_cameras, unseen_cameras

logger = logging.getLogger(__name__)

FORMATS = ("table", "csv", "json", "jsonl")


def add_filter_arguments(
    parser: argparse.ArgumentParser,
    *,
    time_type: Callable[[str], Any],
    probability_type: Callable[[str], Any],
) -> None:
    parser.add_argument(
        "--camera", action="append", default=[], metavar="NAME", help="only this camera (repeatable)"
    )
    parser.add_argument(
        "--since", type=time_type, metavar="TIME", help="processed at or after (ISO, or 2h, 7d, today)"
    )
    parser.add_argument(
        "--until", type=time_type, metavar="TIME", help="processed before (ISO, or 30m, yesterday)"
    )
    parser.add_argument("--label", choices=("female", "male"), help="only this label")
    parser.add_argument(
        "--min-probability", type=probability_type, metavar="P", help="only rows with probability ≥ P"
    )
    parser.add_argument("--status", choices=("ok", "failed"), help="only ok or failed rows")
    parser.add_argument("--model", metavar="VERSION", help="only rows classified by this model version")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")


def check_filter_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.since is not None and args.until is not None and args.since >= args.until:
        parser.error(f"--since ({args.since.isoformat()}) must be before --until ({args.until.isoformat()})")


def filters_from(args: argparse.Namespace) -> ResultFilter:
    return ResultFilter(
        cameras=tuple(args.camera),
        since=args.since,
        until=args.until,
        label=args.label,
        min_probability=args.min_probability,
        status=args.status,
        model_version=args.model,
    )


def _warn_unseen(engine: object, filters: ResultFilter) -> None:
    unseen = unseen_cameras(engine, filters.cameras)  # type: ignore[arg-type]
    if unseen:
        known = ", ".join(known_cameras(engine)) or "none yet"  # type: ignore[arg-type]
        print(
            f"cctv-gender: camera {', '.join(unseen)} has never been seen (known: {known})", file=sys.stderr
        )


def run_results(config: Config, args: argparse.Namespace) -> int:
    from watcher.store.export import OutputFormat, iter_results, write_results
    from watcher.store.opening import open_database

    engine = open_database(config, migrate=False, read_only=True)
    filters = filters_from(args)
    _warn_unseen(engine, filters)
    output_format = OutputFormat(args.format)
    # A table is for a screen: 20 rows unless asked; exports get every matching row unless asked.
    limit = args.limit if args.limit is not None else (20 if output_format == OutputFormat.TABLE else None)
    write_results(iter_results(engine, filters=filters, limit=limit), sys.stdout, output_format=output_format)
    return 0


def run_summary(config: Config, args: argparse.Namespace) -> int:
    from watcher.store.export import OutputFormat, write_results
    from watcher.store.opening import open_database
    from watcher.store.summary import COUNT_COLUMNS, plot_counts, summarize

    engine = open_database(config, migrate=False, read_only=True)
    filters = filters_from(args)
    _warn_unseen(engine, filters)
    by = tuple(args.by)
    rows = summarize(engine, filters=filters, by=by)
    columns = (*by, *COUNT_COLUMNS)
    write_results(
        iter(rows),
        sys.stdout,
        output_format=OutputFormat(args.format),
        columns=columns,
        table_columns=columns,
    )
    if args.plot is not None:
        unit = next((name for name in by if name in ("hour", "day")), "hour")
        plot_rows = summarize(engine, filters=filters, by=("camera", unit))
        plot_counts(plot_rows, Path(args.plot), unit=unit)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0
