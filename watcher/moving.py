"""Moving finished frames to `processed/` or `failed/` without ever overwriting a file there."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path, PurePosixPath

from watcher.faults import kill_point

logger = logging.getLogger(__name__)

# link() fails with these where hard links are impossible (another filesystem, some shares).
_NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


NAME_MAX_BYTES = 255


def _numbered(path: Path, number: int) -> Path:
    """`x.bmp` → `x-<number>.bmp`, shortening the stem so the name still fits NAME_MAX bytes."""
    tail = f"-{number}{path.suffix}"
    room = NAME_MAX_BYTES - len(os.fsencode(tail))
    stem = os.fsencode(path.stem)[:room].decode(errors="ignore")
    return path.with_name(f"{stem}{tail}")


def reserve_destination(root: Path, relative: PurePosixPath, *, taken: set[Path]) -> Path:
    """The first free name for `relative` under `root` (`x.bmp`, `x-1.bmp`, ...), not in `taken`."""
    wanted = root / relative
    candidate, number = wanted, 0
    while candidate in taken or os.path.lexists(candidate):
        number += 1
        candidate = _numbered(wanted, number)
    taken.add(candidate)
    return candidate


def move_no_clobber(source: Path, destination: Path) -> Path:
    """Move `source` to `destination`, or to the next free numbered name; returns where it went."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    wanted, number = destination, 0
    while True:
        try:
            # link() refuses to replace an existing name, which rename() would silently do.
            os.link(source, destination, follow_symlinks=False)
        except FileExistsError:
            if _same_file(source, destination):
                # A move interrupted between link() and unlink(): finish it, do not copy again.
                os.unlink(source)
                return destination
            number += 1
            destination = _numbered(wanted, number)
            continue
        except OSError as error:
            if error.errno not in _NO_HARD_LINK:
                raise
            if os.path.lexists(destination):
                number += 1
                destination = _numbered(wanted, number)
                continue
            _copy_then_rename(source, destination)
        kill_point("linked")  # both names exist: recovery must not make a second copy
        os.unlink(source)
        return destination


def _same_file(first: Path, second: Path) -> bool:
    try:
        a, b = first.lstat(), second.lstat()
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _copy_then_rename(source: Path, destination: Path) -> None:
    staging = destination.with_name(f".{destination.name}.moving")
    shutil.copy2(source, staging, follow_symlinks=False)
    os.rename(staging, destination)
