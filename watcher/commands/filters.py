"""The filters `results` and `summary` share, and the hint for a camera or model version never seen."""

from __future__ import annotations

import argparse
import sys
from datetime import tzinfo

from sqlalchemy import Engine

from watcher.commands.arguments import UsageError, probability_type, time_type
from watcher.intake.names import storable
from watcher.store.export import OutputFormat
from watcher.store.queries import (
    ResultFilter,
    TimeBasis,
    known_cameras,
    known_model_versions,
    unseen_cameras,
    unseen_model_versions,
)
from watcher.times import time_window
from watcher.wording import shown


def add_filter_arguments(parser: argparse.ArgumentParser, *, time_basis: TimeBasis) -> None:
    """The filters; `time_basis` is the default of --time (captured for summaries, processed for rows)."""
    parser.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="NAME",
        help="only this camera (repeatable); '' for frames dropped directly in the inbox, which have none",
    )
    parser.add_argument(
        "--since",
        type=time_type,
        metavar="TIME",
        help="at or after (ISO, or 2h, 7d, today; the site's zone: display.timezone)",
    )
    parser.add_argument("--until", type=time_type, metavar="TIME", help="before (ISO, or 30m, yesterday)")
    parser.add_argument(
        "--time",
        choices=tuple(str(basis) for basis in TimeBasis),
        default=str(time_basis),
        help="which time --since/--until (and hours, days) follow: the frame file's (captured) or "
        f"the row's (processed); default {time_basis}",
    )
    parser.add_argument("--label", choices=("female", "male"), help="only this label")
    parser.add_argument(
        "--min-probability", type=probability_type, metavar="P", help="only rows with probability ≥ P"
    )
    parser.add_argument("--status", choices=("ok", "failed"), help="only ok or failed rows")
    parser.add_argument("--model", metavar="VERSION", help="only rows classified by this model version")
    formats = tuple(str(output_format) for output_format in OutputFormat)
    parser.add_argument("--format", choices=formats, default="table", help="output format (default table)")


def add_spreadsheet_safe(parser: argparse.ArgumentParser) -> None:
    """`--spreadsheet-safe`, for commands whose --format csv writes names (results, summary)."""
    parser.add_argument(
        "--spreadsheet-safe",
        action="store_true",
        help="with --format csv: put an apostrophe before text a spreadsheet would run as a formula "
        "(starting with = + - @); without it, names are written as stored",
    )


def spreadsheet_safe_from(args: argparse.Namespace) -> bool:
    if args.spreadsheet_safe and args.format != OutputFormat.CSV:
        raise UsageError(f"--spreadsheet-safe is for --format csv, not --format {args.format}")
    return bool(args.spreadsheet_safe)


def filters_from(args: argparse.Namespace, *, zone: tzinfo) -> ResultFilter:
    """The filter the arguments ask for, times read in the site's `zone`; UsageError when --since
    is not before --until."""
    try:
        since, until = time_window(
            args.since.text if args.since else None,
            args.until.text if args.until else None,
            zone=zone,
            names=("--since", "--until"),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    return ResultFilter(
        cameras=tuple(_as_stored(camera) for camera in args.camera if camera),
        without_camera="" in args.camera,
        since=since,
        until=until,
        label=args.label,
        min_probability=args.min_probability,
        status=args.status,
        model_version=_as_stored(args.model) if args.model is not None else None,
        time_basis=TimeBasis(args.time),
    )


def _as_stored(name: str) -> str:
    """A name given as the folder's own bytes (not UTF-8: `--camera "$(ls inbox | head -1)"`) as
    the rows store it (`caf\\xe9`); the driver cannot send it as it is. Typed names pass as typed."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return storable(name)
    return name


def warn_unseen(engine: Engine, filters: ResultFilter) -> None:
    """Name the asked-for cameras and model version that have no row at all: likely typos."""
    unseen = unseen_cameras(engine, filters.cameras)
    if unseen:
        _never_seen("camera", unseen, known_cameras(engine))
    if filters.model_version is not None:
        unseen = unseen_model_versions(engine, (filters.model_version,))
        if unseen:
            _never_seen("model version", unseen, known_model_versions(engine))


def _never_seen(what: str, unseen: list[str], known: list[str]) -> None:
    # Camera names are folder names (and a --camera may be one, "$(ls inbox)"): printed raw, one
    # holding an escape sequence would act on the terminal.
    unseen, known = [shown(name) for name in unseen], [shown(name) for name in known]
    named = f"{what} {unseen[0]} has" if len(unseen) == 1 else f"{what}s {', '.join(unseen)} have"
    print(f"cctv-gender: {named} never been seen (known: {', '.join(known) or 'none yet'})", file=sys.stderr)
