"""Which daemon is this: a name, an exclusive lock, and its own in-progress area.

    <inbox>/.in-progress/<name>.lock   held (flock) for as long as the instance runs
    <inbox>/.in-progress/<name>/       the frames it has claimed

Several daemons can share one inbox, on one host or over a network file system. A lock that can
be taken proves its owner is gone, so its claimed frames can be recovered by whoever takes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from watcher.errors import StartupError

VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOCK_SUFFIX = ".lock"

logger = logging.getLogger(__name__)


@dataclass
class InstanceLock:
    name: str
    area: Path
    _descriptor: int

    def release(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = -1

    def keep(self) -> None:
        """Take the lock again if the file at its path is not the one held: the inbox was moved
        away and made again (or `.in-progress/` removed) while the daemon ran. The area, made again
        by the next claim, would otherwise have no lock, and every other instance would take it
        for a dead one's, its frames in flight for a crash's leftovers. StartupError when another
        instance holds the name now. Nothing is made while the inbox itself is away."""
        root = self.area.parent
        lock = root / f"{self.name}{LOCK_SUFFIX}"
        try:
            if os.path.samestat(os.stat(lock), os.fstat(self._descriptor)):
                return
        except OSError:
            pass  # gone with its folder: taken again below
        if not root.parent.is_dir():
            return  # the inbox is away (an unmounted share): waited for by the daemon, never made
        try:
            root.mkdir(exist_ok=True)
            taken = _try_lock(root, self.name)
        except OSError as error:
            logger.warning("cannot take the lock %s again: %s", lock, error.strerror or error)
            return  # tried again at the next rescan
        if taken is None:
            raise StartupError(f"instance {self.name!r} lost its lock {lock} to another daemon: stopping")
        self.release()
        self._descriptor = taken._descriptor
        logger.warning("%s was not this instance's lock any more (the inbox moved?): taken again", lock)


def _try_lock(root: Path, name: str) -> InstanceLock | None:
    descriptor = os.open(root / f"{name}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    area = root / name
    area.mkdir(exist_ok=True)
    return InstanceLock(name=name, area=area, _descriptor=descriptor)


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
