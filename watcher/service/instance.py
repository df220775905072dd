"""Which daemon is this: a name, an exclusive lock, and its own in-progress area.

    <inbox>/.in-progress/<name>.lock   held (flock) for as long as the instance runs
    <inbox>/.in-progress/<name>/       the frames it has claimed

Several daemons can share one inbox, on one host or over a network file system. A lock that can
be taken proves its owner is gone, so its claimed frames can be recovered by whoever takes it.
An inbox replaced under a running instance (`mv inbox inbox.old && mkdir inbox`) takes the lock and
the area with it: the instance takes its lock again in the new inbox and brings its claims over
(see InstanceLock.keep), so the paths it holds for them lead to them again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from watcher.errors import StartupError
from watcher.intake.durability import fsync_dir

VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOCK_SUFFIX = ".lock"
# A handle on the in-progress root: no read permission needed, only a place to start from.
_OPEN_ROOT = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC

logger = logging.getLogger(__name__)


@dataclass
class InstanceLock:
    name: str
    area: Path
    _descriptor: int
    # The in-progress root the lock and area are in, opened (O_PATH) when they were taken: the
    # old root stays reachable through it when the inbox is replaced, and `in_place` compares the
    # root at its path now with it (its identity, not the descriptor: read from the batch threads).
    _root: int = -1
    _root_identity: tuple[int, int] = (0, 0)

    def release(self) -> None:
        for descriptor in (self._descriptor, self._root):
            if descriptor >= 0:
                os.close(descriptor)  # closing the lock's drops the flock
        self._descriptor = self._root = -1

    def in_place(self) -> bool:
        """Whether the area's path still leads to the area this instance holds: False while the
        inbox is away, and once it was replaced until `keep` has brought the claims over."""
        try:
            info = os.stat(self.area.parent)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self._root_identity

    def keep(self) -> int:
        """Take the lock again if the file at its path is not the one held: the inbox was moved
        away and made again (or `.in-progress/` removed) while the daemon ran. The area, made again
        by the next claim, would otherwise have no lock, and every other instance would take it
        for a dead one's, its frames in flight for a crash's leftovers. What the old area holds
        (claims, crash counts, notes) is brought over into the new one, under the same names, so
        every path held for a claimed frame leads to it again; returns how many entries came.
        StartupError when another instance holds the name now, or when the claims cannot come
        over (the new inbox is on another filesystem). Nothing is made while the inbox is away.
        The caller makes sure no batch moves or releases claims meanwhile."""
        root = self.area.parent
        lock = root / f"{self.name}{LOCK_SUFFIX}"
        try:
            if os.path.samestat(os.stat(lock), os.fstat(self._descriptor)):
                return 0
        except OSError:
            pass  # gone with its folder: taken again below
        if not root.parent.is_dir():
            return 0  # the inbox is away (an unmounted share): waited for by the daemon, never made
        try:
            root.mkdir(exist_ok=True)
            taken = _try_lock(root, self.name)
        except OSError as error:
            logger.warning("cannot take the lock %s again: %s", lock, error.strerror or error)
            return 0  # tried again at the next rescan
        if taken is None:
            raise StartupError(f"instance {self.name!r} lost its lock {lock} to another daemon: stopping")
        logger.warning("%s was not this instance's lock any more (the inbox moved?): taken again", lock)
        try:
            # Only the lock file went (removed by hand, say): the area is the one held, in place.
            same_root = taken._root_identity == self._root_identity
            brought = 0 if same_root else bring_over(self._root, self.name, taken.area)
        except BaseException:
            taken.release()
            raise
        self.release()  # the old lock held until its area's claims are over: none adopts them
        self._descriptor, self._root = taken._descriptor, taken._root
        self._root_identity = taken._root_identity
        return brought


def bring_over(old_root: int, name: str, area: Path) -> int:
    """Rename every entry of the area `name` in the in-progress root open as `old_root` into
    `area`, never over an entry there; returns how many moved. StartupError, with where they
    are, when they cannot be renamed there (another filesystem)."""
    try:
        old = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=old_root)
    except OSError:
        return 0  # removed with `.in-progress/`, or never made: nothing to bring
    try:
        entries = sorted(os.listdir(old))
        for brought, entry in enumerate(entries):
            if os.path.lexists(area / entry):
                raise StartupError(f"cannot bring {entry} over from {_where(old)}: {area} has one: stopping")
            try:
                os.rename(entry, area / entry, src_dir_fd=old)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                raise StartupError(
                    f"the inbox was replaced by a folder on another filesystem while "
                    f"{len(entries) - brought} entries of instance {name!r}'s in-progress area were in "
                    f"the old one ({_where(old)}): stopping; put the old inbox back and start again"
                ) from None
        if entries:
            os.fsync(old)
            fsync_dir(area)
            logger.warning(
                "the inbox was replaced: %d claimed entries brought from %s into %s",
                len(entries),
                _where(old),
                area,
            )
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=old_root)
        return len(entries)
    finally:
        os.close(old)


def _where(descriptor: int) -> str:
    """Where an open folder is now, as Linux tells (moved, or on a detached mount)."""
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return "the old inbox"


def _try_lock(root: Path, name: str) -> InstanceLock | None:
    # The lock and the area are taken in the root as opened here, whatever its path leads to later.
    root_descriptor = os.open(root, _OPEN_ROOT)
    try:
        descriptor = os.open(f"{name}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o644, dir_fd=root_descriptor)
    except BaseException:
        os.close(root_descriptor)
        raise
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        os.close(root_descriptor)
        return None
    lock = InstanceLock(name=name, area=root / name, _descriptor=descriptor, _root=root_descriptor)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=root_descriptor)
        info = os.fstat(root_descriptor)
    except BaseException:
        lock.release()
        raise
    lock._root_identity = (info.st_dev, info.st_ino)
    return lock


def default_prefix(config_file: Path | None) -> str:
    """`<hostname>`, plus the config file's name when it is not `config.toml`: two daemons on one
    host (one per GPU, say, with gpu0.toml and gpu1.toml) get names that say which is which."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "host"
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", config_file.stem) if config_file is not None else "config"
    return host if stem in ("config", "") else f"{host}-{stem}"[:60]


def acquire_instance(root: Path, *, name: str | None, prefix: str | None = None) -> InstanceLock:
    """Lock `name`, or the first free `<prefix>-<n>` when no name is given (prefix: see
    `default_prefix`)."""
    root.mkdir(parents=True, exist_ok=True)
    if name is not None:
        if not VALID_NAME.match(name):
            raise StartupError(f"--instance {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
        lock = _try_lock(root, name)
        if lock is None:
            raise StartupError(
                f"instance {name!r} is already running (its lock {root / name}{LOCK_SUFFIX} is held)"
            )
        return lock
    prefix = prefix or default_prefix(None)
    number = 0
    while True:
        lock = _try_lock(root, f"{prefix}-{number}")
        if lock is not None:
            return lock
        number += 1


def orphaned_instances(root: Path, *, own: str) -> Iterator[InstanceLock]:
    """Areas of other instances whose lock is free (their owner is gone), locked for the caller.

    The caller recovers the frames, then `release()`s; the area is removed once empty.
    """
    if not root.is_dir():
        return
    for area in sorted(root.iterdir()):
        if area.name == own or not area.is_dir() or not VALID_NAME.match(area.name):
            continue
        lock = _try_lock(root, area.name)
        if lock is not None:
            yield lock
