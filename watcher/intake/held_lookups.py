"""Whether a name exists (os.path.lexists), looked up without giving the GIL back.

The commit stage reserves each frame's destination in `processed/` or `failed/`: one look a frame
from the batch thread (watcher.intake.moving.reserve_destination). Python gives the GIL back around
the `lstat`, and taking it again can wait, while another of the daemon's threads runs Python (the
other lanes, the loop claiming), until that thread is made to let go: up to the switch interval,
5 ms. How often it waits depends on the cores (bench/placing.py; figures in the README's
Benchmark section). So the look is made through ctypes' `PyDLL`, which keeps the GIL:
`faccessat(F_OK, AT_SYMLINK_NOFOLLOW | AT_EACCESS)`, a few microseconds on a local disk, true
where `lstat` succeeds. An answer it cannot give for certain (a failure other than the name or its
folder being absent) is asked of os.path.lexists; a call the system refuses outright (a seccomp
filter, a C library without the flags) turns the held look off for the process.

Only on filesystems known to be local (`lexists_for`): on a network share or FUSE a look can wait
on the network, and holding the GIL through it would stop every thread of the daemon (SIGTERM's
handling, the heartbeat). The choice is made for the output folder itself: a camera subfolder
mounted apart from it is looked at as the folder is. A local look that takes SLOW_LOOKUP_S or
more (a disk's cold directory block) sends the looks of the next RELEASE_FOR_S back to
os.path.lexists.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from watcher.intake.mounts import filesystem_type

logger = logging.getLogger(__name__)

SLOW_LOOKUP_S = 0.001
RELEASE_FOR_S = 10.0

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100  # Linux's values, the same on every architecture
_AT_EACCESS = 0x200  # the effective ids, as lstat uses (faccessat2 checks the real ones otherwise)
_F_OK = 0
# Failures that mean the name is not there, as lstat would fail: anything else is asked again.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP})
# The call itself refused (a seccomp filter, flags the C library does not take): never again.
_REFUSED = frozenset({errno.EPERM, errno.EINVAL, errno.ENOSYS})
# Filesystems known to answer a look from local memory or disk; any other (NFS, CIFS, FUSE,
# fuseblk, a cluster filesystem) may wait on a network or a process.
LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "jfs", "tmpfs", "ramfs", "overlay"}
)

Lookup = Callable[[str], bool]


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
# process: a slow disk is slow for every thread.
_released_until = 0.0


class LookupsByFolder:
    """The look for names under each folder (lexists_for), chosen again whenever the folder's
    filesystem changes: a share mounted over it after the daemon started."""

    def __init__(self) -> None:
        self._chosen: dict[Path, tuple[int, Lookup]] = {}

    def under(self, folder: Path, device: int) -> Lookup:
        """The look under `folder`, whose `st_dev` the caller has just read (it checks the folder
        is there, once a batch)."""
        known = self._chosen.get(folder)
        if known is None or known[0] != device:
            known = self._chosen[folder] = (device, lexists_for(folder))
        return known[1]


def lexists_for(folder: Path) -> Lookup:
    """The look for names under `folder`: `lexists` on a local filesystem, os.path.lexists (which
    gives the GIL back while it waits) on a network share, FUSE, or one it cannot tell."""
    if _faccessat is None or filesystem_type(folder) not in LOCAL_FILESYSTEMS:
        return os.path.lexists
    return lexists


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
    started, failure = time.perf_counter(), 0
    while True:
        if _faccessat(_AT_FDCWD, encoded, _F_OK, _AT_SYMLINK_NOFOLLOW | _AT_EACCESS) == 0:
            found = True
            break
        failure = ctypes.get_errno()
        if failure != errno.EINTR:
            found = False
            break
    took = time.perf_counter() - started
    if took >= SLOW_LOOKUP_S:
        _released_until = time.monotonic() + RELEASE_FOR_S
        logger.debug("a look took %.1f ms: looks give the GIL back for %.0f s", took * 1000, RELEASE_FOR_S)
    if not found and failure not in _ABSENT:
        if failure in _REFUSED:
            _released_until = math.inf
            logger.debug(
                "faccessat refused (%s): looks give the GIL back from now on", errno.errorcode[failure]
            )
        return os.path.lexists(path)  # not a plain "absent": the usual way says for certain
    return found
