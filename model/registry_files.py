"""How the registry's small files are read and written: never waiting on one that is not a file
(the daemon's loop reads the pointer and a version's metadata between batches), and written with
the modes the process's umask gives (the unit's UMask=0027 lets its group, the operators, read
the registry: temporary files are made 0600 whatever the umask)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zipfile
from pathlib import Path


class NotAFile(OSError):
    """The path names something other than a regular file (a FIFO, a folder, a socket)."""


def read_regular(path: Path, *, limit: int) -> bytes:
    """Up to `limit` bytes of the regular file `path`, opened without waiting (a FIFO there is
    never waited on). FileNotFoundError when absent, NotAFile when it is no regular file."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotAFile(f"{path}: not a file")
        with os.fdopen(os.dup(descriptor), "rb") as handle:
            return handle.read(limit)
    finally:
        os.close(descriptor)


def archive_problem(path: Path) -> str | None:
    """Why `path` cannot be a head's .keras archive (a zip file), read as this process may; None
    when it can be one. Opened without waiting, like read_regular; only its end is read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return "not a file"
        return None if zipfile.is_zipfile(handle) else "not a .keras archive (a zip file)"


def write_atomically(path: Path, text: str) -> None:
    """`text` in `path`, by a rename of a file written beside it, with the umask's mode."""
    descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~current_umask())
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def as_umask_allows(folder: Path) -> None:
    """A folder made by mkdtemp (0700) given the mode a plain mkdir would have."""
    with contextlib.suppress(OSError):
        folder.chmod(0o777 & ~current_umask())


def current_umask() -> int:
    """The process's umask, read where Linux says it (4.7+), without changing it (setting it
    to read it back would race other threads' file creation)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
        return int(next(line for line in status.splitlines() if line.startswith("Umask:")).split()[1], 8)
    return 0o077  # unknown: as closed as can be (the operators' group may then have to be let in)
