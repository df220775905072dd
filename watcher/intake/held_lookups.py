"""Whether a name exists (os.path.lexists), looked up without giving the GIL back.

The commit stage reserves each frame's destination in `processed/` or `failed/`: one look a frame
from the batch thread (watcher.intake.moving.reserve_destination). Python gives the GIL back around
the `lstat`, and taking it again waits, while another of the daemon's threads runs Python (the
other lanes, the loop claiming), until that thread is made to let go: up to the switch interval,
5 ms. On the 2-core VM of 2026-11-28, 128 looks took 0.7 ms alone, 89 ms beside one busy Python
thread and 382 ms beside two (bench/placing.py measures the whole stage); on a GPU that wait is
the lane's. So the look is made through ctypes' `PyDLL`, which keeps the GIL: `faccessat(F_OK,
AT_SYMLINK_NOFOLLOW)`, true exactly where `lstat` succeeds, a few microseconds on a local disk.

A look that is slow (a network share, a cold disk) would hold every thread of the daemon for its
length: one that takes SLOW_LOOKUP_S or more sends the looks of the next RELEASE_FOR_S back to
os.path.lexists, which gives the GIL back while it waits.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import cast

logger = logging.getLogger(__name__)

SLOW_LOOKUP_S = 0.001
RELEASE_FOR_S = 10.0

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100  # Linux's values
_F_OK = 0


def _held_faccessat() -> Callable[[int, bytes, int, int], int] | None:
    try:
        function = ctypes.PyDLL(None, use_errno=True).faccessat  # PyDLL: the GIL stays held
    except AttributeError:  # a C library without it: every look gives the GIL back
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    function.restype = ctypes.c_int
    return cast(Callable[[int, bytes, int, int], int], function)


_faccessat = _held_faccessat()

# Until when (time.monotonic) looks give the GIL back, after a slow one. One value for the
# process: a slow filesystem is slow for every thread.
_released_until = 0.0


def lexists(path: str) -> bool:
    """os.path.lexists(path): whether the name exists, a dangling symlink included; False where
    looking fails (a missing folder, a file where a folder should be, a name too long)."""
    global _released_until
    if _faccessat is None or "\0" in path or time.monotonic() < _released_until:
        return os.path.lexists(path)
    try:
        encoded = os.fsencode(path)
    except UnicodeError:
        return os.path.lexists(path)  # which says False, as it does for every name it cannot encode
    started = time.perf_counter()
    while True:
        found = _faccessat(_AT_FDCWD, encoded, _F_OK, _AT_SYMLINK_NOFOLLOW) == 0
        if found or ctypes.get_errno() != errno.EINTR:
            break
    took = time.perf_counter() - started
    if took >= SLOW_LOOKUP_S:
        _released_until = time.monotonic() + RELEASE_FOR_S
        logger.info(
            "a look at %s took %.1f ms with every thread waiting: the next %.0f s of looks give the GIL back",
            path,
            took * 1000,
            RELEASE_FOR_S,
        )
    return found
