"""`cctv-gender backfill ARCHIVE`: classify a folder of exported frames where they lie (never
moving, renaming or writing anything in it), one row per file, in-process or on Ray."""

from __future__ import annotations

import argparse
import logging
import time
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
from watcher.store.opening import open_database

if TYPE_CHECKING:  # the backfill's modules load the pipeline: only when the command runs
    from watcher.backfill.archive import ArchiveFile
    from watcher.backfill.report import BackfillReport

logger = logging.getLogger(__name__)

HELP = "classify an archive of frames where they lie (in-process, or on a Ray cluster)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser)
    parser.add_argument(
        "archive", type=existing_directory_type, metavar="ARCHIVE", help="the archive's folder"
    )
    parser.add_argument(
        "--ray",
        metavar="local|auto|ADDRESS",
        help="run on Ray: `local` starts one here, `auto` or ray://HOST:10001 / HOST:6379 joins a cluster",
    )
    parser.add_argument(
        "--actors",
        type=positive_int_type,
        default=1,
        metavar="N",
        help="with --ray: model actors (default 1)",
    )
    parser.add_argument("--since", type=time_type, metavar="TIME", help="only files written at or after TIME")
    parser.add_argument("--until", type=time_type, metavar="TIME", help="only files written before TIME")
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be classified; load and write nothing"
    )


def run(config: Config, args: argparse.Namespace) -> int:
    from watcher.backfill.archive import archive_source, list_archive
    from watcher.backfill.report import BackfillReport

    archive: Path = args.archive.resolve()
    if archive == config.paths.inbox or archive.is_relative_to(config.paths.inbox):
        raise UsageError(f"{args.archive} is (inside) paths.inbox: the daemon takes those frames itself")
    zone = config.display.zone
    since = args.since.at(zone) if args.since is not None else None
    until = args.until.at(zone) if args.until is not None else None
    source = archive_source(archive)
    files = list(list_archive(archive, since=since, until=until))
    if args.dry_run:
        # A dry run writes nothing, not even a new database's schema.
        file = sqlite_file(config.database_url)
        todo = files if file is not None and not file.exists() else _not_done(config, None, files, source)
        done = len(files) - len(todo)
        print(f"would classify {len(todo)} of {len(files)} files in {archive} ({done} already done)")
        return EXIT_OK
    engine = open_database(config, migrate=True)
    if args.ray not in (None, "local") and engine.dialect.name == "sqlite":
        raise UsageError(
            "a Ray cluster needs a database every node's driver can reach: set database.url to PostgreSQL"
        )
    todo = _not_done(config, engine, files, source)
    report = BackfillReport(files=len(files), skipped=len(files) - len(todo))
    started = time.perf_counter()
    if args.ray is None:
        from watcher.backfill.in_process import backfill_in_process

        backfill_in_process(config, engine, todo, source=source, report=report)
    else:
        _on_ray(config, engine, todo, source=source, report=report, address=args.ray, actors=args.actors)
    report.seconds = time.perf_counter() - started
    engine.dispose()
    print(report.line())
    return EXIT_OK


def _not_done(
    config: Config, engine: Engine | None, files: list[ArchiveFile], source: str
) -> list[ArchiveFile]:
    """The files with no row yet (same path, size and file time); `engine` None: open one to read."""
    from watcher.backfill.archive import is_done
    from watcher.intake.names import storable
    from watcher.store.queries import archive_rows

    reader = engine or open_database(config, migrate=False, read_only=True)
    try:
        done = archive_rows(reader, source)
    finally:
        if engine is None:
            reader.dispose()
    return [file for file in files if not is_done(file, done, stored_name=storable(file.relative.as_posix()))]


def _on_ray(
    config: Config,
    engine: Engine,
    todo: list[ArchiveFile],
    *,
    source: str,
    report: BackfillReport,
    address: str,
    actors: int,
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
