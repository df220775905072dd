"""The SQLite file the daemon writes is the one at the configured path, or the daemon stops.

Deleted (or replaced) under a running daemon, SQLite keeps writing into the unlinked file: every
commit would "succeed" and every frame would be moved, with no row anyone will ever read. So the
file's identity (device, inode) is taken when the database is opened and compared before each
commit. The same goes for its write-ahead log, which holds every commit since the last
checkpoint: removed (the folk cure for a "locked" database), the daemon would go on committing
into the unlinked log, and a crash or a new connection would lose those rows.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine

from watcher.errors import StartupError
from watcher.store.engine import sqlite_file
from watcher.store.session import translated_errors


class DatabaseFileReplaced(StartupError):
    """The database file at the configured path is gone or another file: nothing more is stored."""


class DatabaseFileGuard:
    def __init__(self, engine: Engine) -> None:
        self._path = sqlite_file(engine.url)
        # Checked only in WAL mode (a filesystem that cannot share memory keeps another journal).
        self._wal = Path(f"{self._path}-wal") if self._path is not None and _in_wal_mode(engine) else None
        self._identity = self._current() if self._path is not None else None

    def _current(self) -> tuple[int, int] | None:
        assert self._path is not None
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (info.st_dev, info.st_ino)

    def check(self) -> None:
        """Raise DatabaseFileReplaced unless the configured file is still the one opened. Called
        inside a write transaction: in WAL mode its log is open then, so it must be there too."""
        if self._path is None:
            return  # a server database: no file of ours to lose
        current = self._current()
        if current != self._identity:
            what = "was removed" if current is None else "was replaced by another file"
        elif self._wal is not None and not os.path.lexists(self._wal):
            what = f"lost its write-ahead log {self._wal.name} (removed)"
        else:
            return
        raise DatabaseFileReplaced(
            f"the database file {self._path} {what} while the daemon ran; stopping "
            "(frames whose rows were not stored stay in progress and are recovered at the next start)"
        )


def _in_wal_mode(engine: Engine) -> bool:
    with translated_errors():
        connection = engine.raw_connection()  # make_engine's connections begin nothing by themselves
        try:
            cursor = connection.cursor()
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            cursor.close()
        finally:
            connection.close()
    return str(mode).lower() == "wal"
