"""The store's two errors: what a caller may wait out, and what must stop it.

Every statement runs inside `watcher.store.session`, which turns the driver's exceptions into
these two, so no caller has to read a driver's message to know whether to retry.
"""

from __future__ import annotations

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

# SQLite's messages for SQLITE_BUSY / SQLITE_LOCKED / SQLITE_FULL.
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy", "disk is full")


class StorageError(Exception):
    """The database refused or lost a statement; the message is the driver's first line."""


class StorageUnavailable(StorageError):
    """Locked, busy, out of space, or the server went away: the same work may succeed later."""


class StorageFailed(StorageError):
    """Anything else (an I/O error, a corrupt file, bad SQL): retrying will not help."""


class RowRejected(StorageFailed):
    """A value that its column cannot hold (too long, out of range, a constraint): the row's own
    fault, not the database's; the rest of its batch can still be stored."""


def is_transient_driver_error(error: DBAPIError) -> bool:
    """Locked or busy databases, lost server connections and full disks pass; I/O errors do not."""
    if error.connection_invalidated:
        return True  # the server went away (restarted): the pool reconnects on the next try
    if isinstance(error, OperationalError):
        if type(error.orig).__module__.startswith("psycopg"):
            # psycopg's OperationalError: connection refused or lost, server shutting down or
            # starting up, out of disk: all outlast a retry. Bad SQL is ProgrammingError.
            return True
        message = str(error.orig).lower()
        return any(text in message for text in _TRANSIENT_SQLITE)
    return False


def translate(error: DBAPIError) -> StorageError:
    """The project's exception for a driver error (raise it `from` the original)."""
    text = str(error.orig).strip() or type(error.orig).__name__
    message = text.splitlines()[0]
    if is_transient_driver_error(error):
        return StorageUnavailable(message)
    if isinstance(error, DataError | IntegrityError):
        return RowRejected(message)
    return StorageFailed(message)
