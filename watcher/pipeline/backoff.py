"""Waiting out storage that is away: which errors pass, and how long to wait before a retry."""

from __future__ import annotations

import errno
import time

from watcher.intake.placement import ClaimsAway, OutputFolderAway
from watcher.store.errors import StorageUnavailable

MAX_RETRY_DELAY_S = 30.0


def is_transient(error: BaseException) -> bool:
    """A database away or locked, a full disk, a missing output folder, claims away pass; I/O
    errors do not."""
    if isinstance(error, StorageUnavailable | OutputFolderAway | ClaimsAway):
        return True
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return False


class Backoff:
    """Doubling delays from 1 s up to MAX_RETRY_DELAY_S, reset by a success."""

    def __init__(self) -> None:
        self.delay = 0.0
        self._retry_at = 0.0

    def failed(self) -> float:
        """Record a failure; returns the seconds until the next try."""
        self.delay = min(self.delay * 2, MAX_RETRY_DELAY_S) if self.delay else 1.0
        self._retry_at = time.monotonic() + self.delay
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._retry_at
