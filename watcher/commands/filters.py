"""The filters `results` and `summary` share, and the hint for a camera never seen."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import Engine

from watcher.commands.arguments import UsageError, probability_type, time_type
from watcher.store.export import OutputFormat
from watcher.store.queries import ResultFilter, known_cameras, unseen_cameras


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
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
    formats = tuple(str(output_format) for output_format in OutputFormat)
    parser.add_argument("--format", choices=formats, default="table", help="output format (default table)")


def filters_from(args: argparse.Namespace) -> ResultFilter:
    """The filter the arguments ask for; UsageError when --since is not before --until."""
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise UsageError(
            f"--since ({args.since.isoformat()}) must be before --until ({args.until.isoformat()})"
        )
    return ResultFilter(
        cameras=tuple(args.camera),
        since=args.since,
        until=args.until,
        label=args.label,
        min_probability=args.min_probability,
        status=args.status,
        model_version=args.model,
    )


def warn_unseen(engine: Engine, filters: ResultFilter) -> None:
    """Name the asked-for cameras that have no row at all: likely typos."""
    unseen = unseen_cameras(engine, filters.cameras)
    if unseen:
        known = ", ".join(known_cameras(engine)) or "none yet"
        print(
            f"cctv-gender: camera {', '.join(unseen)} has never been seen (known: {known})", file=sys.stderr
        )
