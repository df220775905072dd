"""The SQLite file the daemon writes is the one at the configured path, or the daemon stops.

Deleted (or replaced) under a running daemon, SQLite keeps writing into the unlinked file: every
commit would "succeed" and every frame would be moved, with no row anyone will ever read. So the
file's identity (device, inode) is taken when the database is opened and compared before each
commit.
"""

from __future__ import annotations

import os

from sqlalchemy import Engine

from watcher.errors import StartupError
from watcher.store.engine import sqlite_file


class DatabaseFileReplaced(StartupError):
    """The database file at the configured path is gone or another file: nothing more is stored."""


class DatabaseFileGuard:
    def __init__(self, engine: Engine) -> None:
        self._path = sqlite_file(engine.url)
        self._identity = self._current() if self._path is not None else None

    def _current(self) -> tuple[int, int] | None:
        assert self._path is not None
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (info.st_dev, info.st_ino)

    def check(self) -> None:
        """Raise DatabaseFileReplaced unless the configured file is still the one opened."""
        if self._path is None:
            return  # a server database: no file of ours to lose
        current = self._current()
        if current == self._identity:
            return
        what = "was removed" if current is None else "was replaced by another file"
        raise DatabaseFileReplaced(
            f"the database file {self._path} {what} while the daemon ran; stopping "
            "(frames whose rows were not stored stay in progress and are recovered at the next start)"
        )
