"""Making renames and moves survive a power cut: fsync the directories whose entries changed."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
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


def fsync_dirs(paths: Iterable[Path]) -> None:
    for path in sorted(set(paths)):
        fsync_dir(path)
