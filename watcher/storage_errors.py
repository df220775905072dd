"""Which storage errors are worth waiting out, and which must stop the daemon."""

from __future__ import annotations

import errno

from sqlalchemy.exc import OperationalError

MAX_RETRY_DELAY_S = 30.0
# SQLite's messages for SQLITE_BUSY / SQLITE_LOCKED / SQLITE_FULL.
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy", "disk is full")


def is_transient(error: BaseException) -> bool:
    """Locked or busy databases and full disks pass; I/O errors (a failed fsync) do not."""
    if isinstance(error, OperationalError):
        message = str(error.orig).lower()
        return any(text in message for text in _TRANSIENT_SQLITE)
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return False
