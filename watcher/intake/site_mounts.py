"""While the daemon runs: is each site folder still under the mount point it was under at start?

A share unmounted while the daemon runs (`umount` succeeds while nothing is open there, between
batches) leaves its mount point behind, an empty folder on the local disk that is not missing:
frames moved there would be hidden once the share is back, their rows pointing at the share's
files. So a site folder under another mount point than at start (the one recorded in the folders'
mark, or confirmed against it: watcher.intake.folders) counts as missing while the daemon runs:
the loop waits (SiteWatch), a batch's moves wait (watcher.pipeline.recording).

Cheap on the hot path, which looks per batch: the caller's os.stat gives the folder's device and
inode; the mount table (/proc/self/mountinfo, thousands of lines on some hosts) is read only when
they are not the ones last accepted there. The device alone would not do: the kernel hands a
freed device number out again, so another share mounted above the folder after its own was
unmounted (a processed/ made on it) can have the very number the folder had. Then the mount
POINT decides, as at start: the same point with a new device (an NFS share or an automount
mounted again, an autofs trigger before its share is on it) is the same place, and its device and
inode are remembered; another point is away. Without a mount table a folder is taken as where it
was (as before mounts were watched).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from watcher.intake.folder_mounts import MountChange, Records
from watcher.intake.mounts import MOUNTINFO, folder_stat, mount_of

logger = logging.getLogger(__name__)


# A folder's device and inode numbers (os.stat's st_dev, st_ino).
Identity = tuple[int, int]


class SiteMounts:
    """The mount each site folder was on at start (its key's, recorded or confirmed), and the
    device last accepted there. Made empty (no folder known) it finds nothing elsewhere: a
    processor without a daemon's start."""

    def __init__(self, starts: Records | None = None, *, mountinfo: Path = MOUNTINFO) -> None:
        self._starts = {folder: (key, mount) for (key, folder), mount in (starts or {}).items()}
        self._mountinfo = mountinfo
        # Written by the batches' threads and the loop alike: a race costs one more reading.
        self._seen: dict[Path, Identity] = {}

    @classmethod
    def at_start(cls, records: Records, *, mountinfo: Path = MOUNTINFO) -> SiteMounts:
        """From the mounts prepare_folders found the site folders on (recorded or confirmed)."""
        return cls(records, mountinfo=mountinfo)

    def elsewhere(self, folder: Path, seen: Identity) -> MountChange | None:
        """Whether `folder`, a folder whose os.stat gave `seen` (identity_of), is under another
        mount point than at start; None when it is not, or when that cannot be known."""
        start = self._starts.get(folder)
        if start is None or self._seen.get(folder) == seen:
            return None
        mount = mount_of(folder, mountinfo=self._mountinfo)
        if mount is None:
            return None  # no mount table: taken as where it was
        key, recorded = start
        if mount.point != recorded.point:
            return MountChange(key, folder, recorded, mount)
        # Remembered only if no mount came or went while the table was read: a device seen
        # before a share came back must not pass for the share's.
        if _identity(folder) == seen:
            if folder in self._seen:
                logger.debug("%s: a new device at its mount point %s (mounted again)", folder, recorded.point)
            self._seen[folder] = seen
        return None

    def away(self, folder: Path) -> str | None:
        """Why `folder` cannot take or give frames now (missing, or under another mount point);
        None when it can."""
        info = folder_stat(folder)
        if info is None:
            return f"{folder} missing"
        moved = self.elsewhere(folder, identity_of(info))
        return moved.described() if moved else None


class SiteWatch:
    """The daemon loop's look at its site folders: each turn waits while one is away (logged once,
    and once when all are back, the loop woken then)."""

    def __init__(
        self, inbox: Path, outputs: Iterable[Path], mounts: SiteMounts, *, wake: threading.Event
    ) -> None:
        self._inbox = inbox
        self._folders = [inbox, *outputs]
        self._mounts = mounts
        self._wake = wake
        self._away = False

    def available(self) -> bool:
        away = [reason for folder in self._folders if (reason := self._mounts.away(folder)) is not None]
        if away and not self._away:
            # Never recreate them: under an empty mount point they would land on the wrong disk.
            logger.warning("%s (unmounted?): waiting for it to return", ", ".join(away))
        elif not away and self._away:
            logger.info("folders are back: resuming")
            self._wake.set()
        self._away = bool(away)
        return not away

    def inbox_elsewhere(self) -> bool:
        """The inbox is a folder under another mount point than at start: the loop does not rescan
        it, as nothing is done with an inbox gone. InstanceLock.keep, which does nothing while the
        inbox is gone, would make the instance's lock and area again in this one, on the wrong disk."""
        info = folder_stat(self._inbox)
        return info is not None and self._mounts.elsewhere(self._inbox, identity_of(info)) is not None


def identity_of(info: os.stat_result) -> Identity:
    return info.st_dev, info.st_ino


def _identity(folder: Path) -> Identity | None:
    try:
        return identity_of(os.stat(folder))
    except OSError:
        return None
