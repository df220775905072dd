"""`cctv-gender backfill ARCHIVE`: classify a folder of exported frames where they lie (never
moving, renaming or writing anything in it), one row per file, in-process or on Ray."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from watcher.commands.arguments import (
    UsageError,
    add_config,
    existing_directory_type,
    positive_int_type,
    time_type,
)
from watcher.commands.exit_codes import EXIT_OK
from watcher.config import Config
from watcher.errors import StartupError
from watcher.store.engine import sqlite_file
from watcher.store.opening import SchemaNotCurrent, open_database
from watcher.times import time_window

if TYPE_CHECKING:  # the backfill's modules load the pipeline: only when the command runs
    from watcher.backfill.archive import ArchiveFile, DoneRows
    from watcher.backfill.report import BackfillReport

# The highest TCP port (a larger one wrapped around in the connection check, or was refused late).
MAX_PORT = 65535
HELP = "classify an archive of frames where they lie (in-process, or on a Ray cluster)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "archive", type=existing_directory_type, metavar="ARCHIVE", help="the archive's folder"
    )
    parser.add_argument(
        "--ray",
        type=ray_address_type,
        metavar="local|auto|ADDRESS",
        help="run on Ray: `local` starts one here, `auto` (on a cluster's node) or HEAD:6379 joins a cluster",
    )
    parser.add_argument(
        "--actors",
        type=positive_int_type,
        default=None,
        metavar="N",
        help="with --ray: model actors (default: one per GPU, else one per CPU of the cluster)",
    )
    parser.add_argument("--since", type=time_type, metavar="TIME", help="only files written at or after TIME")
    parser.add_argument("--until", type=time_type, metavar="TIME", help="only files written before TIME")
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be classified; load and write nothing"
    )


def ray_address_type(text: str) -> str:
    """`local`, `auto` or the head's HOST:PORT, its form checked as it is parsed (a usage error,
    exit 2); whether anything listens there is checked once the command runs (check_reachable)."""
    if text in ("local", "auto"):
        return text
    host, _, port = text.rpartition(":")
    if not host.strip("[]") or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"{text}: use local, auto, or the head's HOST:PORT (like 10.0.0.5:6379)"
        )
    return text


def run(config: Config, args: argparse.Namespace) -> int:
    from watcher.backfill.archive import ListingCounts, archive_source, list_archive, not_done
    from watcher.backfill.report import BackfillReport
    from watcher.store.queries import archive_rows

    archive: Path = args.archive.resolve()
    _refuse_site_folders(config, archive, shown=args.archive)
    if args.actors is not None and args.ray is None:
        raise UsageError("--actors is for --ray (in-process, the model runs in this process)")
    if args.ray not in (None, "local") and sqlite_file(config.database_url) is not None:
        raise UsageError(
            "a Ray cluster needs a database every node's driver can reach: set database.url to PostgreSQL"
        )
    if args.ray is not None:
        from watcher.backfill.on_ray import check_reachable

        check_reachable(args.ray)  # before anything is read or migrated
    try:
        since, until = time_window(
            args.since.text if args.since else None,
            args.until.text if args.until else None,
            zone=config.display.zone,
            names=("--since", "--until"),
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    source = archive_source(archive)
    listed = list_archive(archive, since=since, until=until)  # listed as it is worked through
    if args.dry_run:
        return _dry_run(config, listed, source=source, shown=archive)
    engine = open_database(config, migrate=True)
    counts = ListingCounts()
    todo = not_done(listed, partial(archive_rows, engine, source), counts=counts)
    report = BackfillReport()
    first = next(todo, None)
    started = time.perf_counter()
    if first is None:
        pass  # nothing to read: no model, no Ray
    elif args.ray is None:
        from watcher.backfill.in_process import backfill_in_process

        backfill_in_process(config, engine, chain([first], todo), source=source, report=report)
    else:
        _on_ray(
            config,
            engine,
            chain([first], todo),
            source=source,
            report=report,
            address=args.ray,
            actors=args.actors,
        )
    report.seconds = time.perf_counter() - started
    report.files, report.skipped = counts.files, report.skipped + counts.done
    engine.dispose()
    print(report.line())
    return EXIT_OK


def _refuse_site_folders(config: Config, archive: Path, *, shown: Path) -> None:
    """The inbox, processed/ and failed/ are the daemon's, and the database is written: none may
    be the archive, inside it, or hold it."""
    for key, folder in config.paths.site_folders().items():
        if archive.is_relative_to(folder) or folder.is_relative_to(archive):
            raise UsageError(
                f"{shown} is, holds or lies inside {key} ({folder}): the daemon's frames are not an archive"
            )
    database = sqlite_file(config.database_url)
    if database is not None and database.resolve().is_relative_to(archive):
        raise UsageError(f"{shown} holds the database ({database}), which a backfill writes")


def _dry_run(config: Config, listed: Iterable[ArchiveFile], *, source: str, shown: Path) -> int:
    from watcher.backfill.archive import ListingCounts, not_done

    counts = ListingCounts()
    with _done_rows_read_only(config, source) as done_rows:
        todo = sum(1 for _ in not_done(listed, done_rows, counts=counts))
    print(f"would classify {todo} of {counts.files} files in {shown} ({counts.done} already done)")
    return EXIT_OK


@contextmanager
def _done_rows_read_only(config: Config, source: str) -> Iterator[Callable[[list[str]], DoneRows]]:
    """A dry run's lookup of done rows (watcher.backfill.archive.not_done), through an engine of its
    own: a database not made or not migrated yet has done nothing."""
    from watcher.store.queries import archive_rows

    file = sqlite_file(config.database_url)
    if file is not None and not file.exists():
        yield lambda paths: {}
        return
    try:
        reader = open_database(config, migrate=False, read_only=True)
    except SchemaNotCurrent:  # the real run migrates it first; any other error is the run's too
        yield lambda paths: {}
        return
    try:
        yield partial(archive_rows, reader, source)
    finally:
        reader.dispose()


def _on_ray(
    config: Config,
    engine: Engine,
    todo: Iterable[ArchiveFile],
    *,
    source: str,
    report: BackfillReport,
    address: str,
    actors: int | None,
) -> None:
    try:
        import ray
    except ImportError:
        raise StartupError("--ray needs Ray: pip install -e '.[ray]'") from None
    from watcher.backfill.on_ray import backfill_on_ray, connect

    connect(address)
    try:
        backfill_on_ray(config, engine, todo, source=source, report=report, actors=actors)
    finally:
        ray.shutdown()
