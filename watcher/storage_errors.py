"""Which storage errors are worth waiting out, and which must stop the daemon."""

from __future__ import annotations

import errno

from sqlalchemy.exc import DBAPIError, OperationalError

MAX_RETRY_DELAY_S = 30.0
# SQLite's messages for SQLITE_BUSY / SQLITE_LOCKED / SQLITE_FULL.
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy", "disk is full")


class OutputFolderMissing(FileNotFoundError):
    """`processed/` or `failed/` is gone (an unmounted share): the batch waits for it to return."""


def is_transient(error: BaseException) -> bool:
    """Locked or busy databases, lost server connections, full disks and missing output folders
    pass; I/O errors (a failed fsync) do not."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True  # the server went away (restarted): the pool reconnects on the next try
    if isinstance(error, OperationalError):
        if type(error.orig).__module__.startswith("psycopg"):
            # psycopg's OperationalError: connection refused or lost, server shutting down or
            # starting up, out of disk: all outlast a retry. Bad SQL is ProgrammingError.
            return True
        message = str(error.orig).lower()
        return any(text in message for text in _TRANSIENT_SQLITE)
    if isinstance(error, OutputFolderMissing):
        return True
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return False
