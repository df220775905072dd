"""Opening the results database for a command: the engine, migrated or checked."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from watcher.config import Config, ConfigError
from watcher.errors import StartupError
from watcher.store.engine import make_engine, shown_url, sqlite_file
from watcher.store.errors import StorageError
from watcher.store.migrate import current_revision, head_revision, require_known_revision, upgrade_to_head


class SchemaNotCurrent(StartupError):
    """The database is empty or older than this release: a command that migrates brings it up."""


def open_database(config: Config, *, migrate: bool, read_only: bool = False) -> Engine:
    """An engine on `database.url`; `migrate` upgrades to head, otherwise the schema must be current.

    `read_only` (commands that only read) gives an engine that refuses writes and never holds
    the write lock the daemon needs (see `make_engine`); it cannot migrate. A database that
    cannot be opened leaves no folder behind.
    """
    if migrate and read_only:
        raise ValueError("a read-only engine cannot migrate")
    made: list[Path] = []
    try:
        _refuse_non_file(config.database_url)
        if read_only:
            _require_sqlite_file(config.database_url)  # a reader never makes one (an unmounted share?)
        else:
            made = _make_sqlite_folder(config.database_url)
            made += _make_sqlite_file(config.database_url)
        return _open(config, migrate=migrate, read_only=read_only)
    except (ArgumentError, NoSuchModuleError, ImportError, StorageError, OSError) as error:
        _remove_empty(made)  # a database that cannot be opened leaves no folder (or file) behind
        raise _one_line_error(config, error) from None


def _one_line_error(config: Config, error: Exception) -> ConfigError | StartupError:
    """What the user is told: the config's key when the URL is at fault, else the database."""
    if isinstance(error, ArgumentError | NoSuchModuleError):
        return ConfigError(f"{config.source}: database.url: {error}")
    if isinstance(error, ImportError):
        driver = error.name or error
        return ConfigError(f"{config.source}: database.url: its driver is not installed ({driver})")
    cannot = f"cannot open the database {_shown(config.database_url)}"
    if isinstance(error, OSError):
        return StartupError(f"{cannot}: {error.strerror or error}")
    # StorageError: unreachable, locked, or not a database at all ("file is not a database").
    return StartupError(f"{cannot}: {error}")


def _shown(url: str) -> str:
    """The URL as it may be printed (to a journal, say): its password hidden."""
    try:
        return shown_url(url)
    except (ArgumentError, ValueError):
        return "(database.url)"


def _open(config: Config, *, migrate: bool, read_only: bool) -> Engine:
    settings = config.database
    engine = make_engine(config.database_url, busy_timeout_ms=settings.busy_timeout_ms, read_only=read_only)
    if migrate:
        upgrade_to_head(engine)
        return engine
    revision = current_revision(engine)
    require_known_revision(revision)  # a newer release's schema: `db upgrade` cannot help
    if revision != head_revision():
        raise SchemaNotCurrent(
            f"the database at {shown_url(engine.url)} is not at the "
            "current schema; run `cctv-gender db upgrade`"
        )
    return engine


def _refuse_non_file(url: str) -> None:
    """A folder where the SQLite file should be (`mkdir -p data/results.sqlite3`), or a file where
    its folder should be (paths.data): named as such, not as a database still to be made, nor as
    SQLite's "unable to open database file" or mkdir's "File exists"."""
    file = sqlite_file(url)
    if file is None:
        return
    if file.exists() and not file.is_file():
        what = "a folder" if file.is_dir() else "not a regular file"
        raise StartupError(f"{file} is {what}, not a database file (database.url, else paths.data)")
    nearest = next((folder for folder in file.parents if folder.exists()), None)
    if nearest is not None and not nearest.is_dir():
        raise StartupError(f"{nearest} is a file, not a folder: it cannot hold the database {file.name}")


def _require_sqlite_file(url: str) -> None:
    file = sqlite_file(url)
    if file is not None and not file.is_file():
        raise StartupError(
            f"there is no database at {file} yet: the daemon makes it at its first start "
            "(or run `cctv-gender db upgrade`)"
        )


def _make_sqlite_folder(url: str) -> list[Path]:
    """SQLite creates the file but not its folder (paths.data on a first start, say): the folders
    made, outermost first."""
    file = sqlite_file(url)
    if file is None:
        return []
    missing = [folder for folder in (file.parent, *file.parent.parents) if not folder.exists()]
    file.parent.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _make_sqlite_file(url: str) -> list[Path]:
    """The database file, made empty (an empty file is an empty SQLite database) before SQLite
    would make it with the umask of whoever runs the command: an admin's 022 made `db upgrade`'s
    file world-readable in the unit's 2750 data folder. Made here, it is shut to those its folder
    shuts out; SQLite gives its -wal and -shm the file's mode. A file already there is left as is."""
    file = sqlite_file(url)
    if file is None:
        return []
    mode = database_file_mode(folder_mode=file.parent.stat().st_mode)
    try:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode))
    except FileExistsError:
        return []
    return [file]


def database_file_mode(*, folder_mode: int) -> int:
    """SQLite's own 0644, less read for group or others where the folder gives them nothing; the
    umask still applies on top (the unit's 0027 gives 0640 either way)."""
    mode = 0o644
    for shut_out in (0o070, 0o007):
        if not folder_mode & shut_out:
            mode &= ~shut_out
    return mode


def _remove_empty(made: list[Path]) -> None:
    # Innermost first; a folder something else wrote into meanwhile stays, and so does a database
    # file that holds anything.
    for path in reversed(made):
        with contextlib.suppress(OSError):
            if path.is_dir():
                path.rmdir()
            elif path.stat().st_size == 0:
                path.unlink()
