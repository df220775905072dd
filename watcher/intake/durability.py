"""Making renames and moves survive a power cut: fsync the directories whose entries changed."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


# Why a folder of the operator's may not open for its flush any more: its read permission taken
# away (chmod, while a claim from it was in flight), a file or a link loop in its place.
_NOT_OPENABLE = (errno.EACCES, errno.ENOTDIR, errno.ELOOP)


def fsync_dir(path: Path, *, operators: bool = False, dir_fd: int | None = None) -> None:
    """Flush `path`'s entries (relative to `dir_fd`, if given); one gone is skipped, and so is one
    of the `operators` folders (a camera folder a claim left) that cannot be opened any more: it
    must not stop the daemon."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as error:
        if not (operators and error.errno in _NOT_OPENABLE):
            raise
        logger.debug("cannot open %s to flush it: %s", path, error.strerror)
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
        # Some network filesystems refuse fsync on directories; their server decides durability.
        logger.debug("fsync of %s not supported: %s", path, error)
    finally:
        os.close(descriptor)


def fsync_dirs(paths: Iterable[Path], *, operators: bool = False) -> None:
    for path in sorted(set(paths)):
        fsync_dir(path, operators=operators)
