"""`cctv-gender db upgrade | copy`: apply the migrations; copy every result to another database."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from watcher.commands.arguments import UsageError, add_config, url_type
from watcher.commands.exit_codes import EXIT_OK
from watcher.config import Config
from watcher.config.database import refuse_unencoded_at, sqlite_path_from
from watcher.errors import StartupError
from watcher.store.copy import copy_results, same_postgresql_tables
from watcher.store.engine import make_engine, shown_url, sqlite_file
from watcher.store.errors import StorageError
from watcher.store.migrate import current_revision
from watcher.store.opening import open_database
from watcher.wording import plural

HELP = "database maintenance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    add_config(actions.add_parser("upgrade", help="apply the schema migrations (Alembic, to head)"))
    copy = actions.add_parser(
        "copy",
        help="copy every result to another database (e.g. SQLite → PostgreSQL); safe to repeat",
    )
    copy.add_argument(
        "--to",
        required=True,
        type=url_type,
        metavar="URL",
        help="target database URL, e.g. postgresql+psycopg://host/db",
    )
    add_config(copy)


def run(config: Config, args: argparse.Namespace) -> int:
    if args.db_command == "copy":
        return copy(config, target_url=args.to)
    return upgrade(config)


def upgrade(config: Config) -> int:
    engine = open_database(config, migrate=True)
    print(f"database at revision {current_revision(engine)}")
    return EXIT_OK


def copy(config: Config, *, target_url: str) -> int:
    source = open_database(config, migrate=False, read_only=True)
    try:
        refuse_unencoded_at(target_url)
        target_url = _from_the_working_folder(target_url)
        if sqlite_file(target_url) is None and make_url(target_url).get_backend_name() == "sqlite":
            # Each connection would get its own empty database: every row "copied", then gone.
            raise StartupError("--to: an in-memory SQLite database keeps nothing: name a file")
        target = make_engine(target_url, busy_timeout_ms=config.database.busy_timeout_ms)
    except (ArgumentError, NoSuchModuleError) as error:
        raise StartupError(f"--to: {error}") from None
    except ValueError:  # a port that is not a number: its text (a password's tail?) not printed
        raise StartupError("--to: not a URL that can be read (is its port a number?)") from None
    except ImportError as error:  # a dialect whose driver is not installed (mysql://)
        raise StartupError(f"--to: its driver is not installed ({error.name or error})") from None
    shown = shown_url(target.url)
    try:
        _refuse_the_source(source, target, shown=shown)
        _refuse_a_missing_folder(target)
        report = copy_results(source, target)
    except StorageError as error:
        raise StartupError(f"cannot copy to {shown}: {error}") from None
    print(
        f"copied {plural(report.copied, 'row')} to {shown} in {report.seconds:.1f} s "
        f"({plural(report.already_there, 'was', 'were')} already there), "
        f"and {plural(report.reviews_copied, 'review')}"
    )
    return EXIT_OK


def _refuse_the_source(source: Engine, target: Engine, *, shown: str) -> None:
    """Refuse a `--to` that is this config's database under another spelling, which would have
    "copied" 0 rows onto itself (a SQLite file named through `..`, a symlink, a hard link or the URI
    form; on PostgreSQL, `localhost` for 127.0.0.1), or a SQLite file beside it (_refuse_a_side_file)."""
    same = f"--to {shown} names the database this config already uses"
    if shown_url(target.url) == shown_url(source.url) or same_postgresql_tables(source, target):
        raise UsageError(same)
    source_file, target_file = sqlite_file(source.url), sqlite_file(target.url)
    if source_file is None or target_file is None:
        return
    try:
        same_file = source_file.samefile(target_file)
    except OSError:  # a target not there yet (or not reachable) is not the source
        same_file = False
    if same_file:
        raise UsageError(same)
    _refuse_a_side_file(source_file, target_file, shown=shown)


# The files SQLite keeps beside a database, named after it.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _refuse_a_side_file(source_file: Path, target_file: Path, *, shown: str) -> None:
    """A target named as the source's WAL, shared memory or journal (or the source as the target's)
    is taken by SQLite for that side file: the copy into `results.sqlite3-wal` was checkpointed into
    the source and deleted ("copied 6 rows", then gone), into `-shm` it failed half-way."""
    try:  # SQLite names the side files after the database's real path (symlinks followed)
        source_path, target_path = str(source_file.resolve()), str(target_file.resolve())
    except (OSError, RuntimeError):  # a symlink loop: opening it reports it
        return
    for suffix in SQLITE_SIDE_FILES:
        if target_path == source_path + suffix:
            raise UsageError(
                f"--to {shown} names the {suffix} file SQLite keeps beside the database this config "
                "uses: name another file"
            )
        if source_path == target_path + suffix:
            raise UsageError(
                f"--to {shown} names a database whose {suffix} file would be the database this "
                "config uses: name another file"
            )


def _refuse_a_missing_folder(target: Engine) -> None:
    """A SQLite file makes itself, but not its folder: name the folder, or the folder named as the
    file (SQLite says only "unable to open database file")."""
    target_file = sqlite_file(target.url)
    if target_file is None:
        return
    if target_file.is_dir():
        raise UsageError(f"--to: {target_file.absolute()} is a folder: name a database file in it")
    folder = target_file.absolute().parent
    if folder.is_dir():
        return
    if folder.exists():
        raise UsageError(f"--to: {folder} is a file, not a folder")
    raise UsageError(f"--to: no such folder {folder}")


def _from_the_working_folder(url: str) -> str:
    """`url` with a relative SQLite path made absolute against the folder the command runs in: a
    command line's path is the shell's (not the config's, as database.url's is), and the report
    names the file. A shell left in a folder removed since has none: only a relative path needs it."""
    try:
        here = Path.cwd()
    except FileNotFoundError:
        # Against "/" any relative SQLite path changes, and nothing else does.
        if sqlite_path_from(url, folder=Path("/")) != url:
            raise StartupError(
                "--to: a relative SQLite path, and the folder this command runs in is gone: name the "
                "file from /"
            ) from None
        return url
    return sqlite_path_from(url, folder=here)
