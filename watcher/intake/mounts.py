"""What a folder is mounted on, from the kernel's mount table (/proc/self/mountinfo): its
filesystem type, to tell whether inotify events can be trusted there, and its mount point, to tell
an unmounted share's empty mount point from the share (watcher.intake.folder_mounts)."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystems where changes made by other hosts deliver no inotify events.
NETWORK_FILESYSTEMS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "lustre",
    "gpfs",
)
# mountinfo escapes space, tab, newline and backslash as three octal digits (\040), nothing else.
_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """A mount point and the type of the filesystem mounted there."""

    point: Path
    fstype: str


@dataclass(frozen=True)
class _Entry:
    mount_id: str
    parent_id: str
    device: str  # major:minor, only to relate the lines of one reading, never kept
    root: Path  # the folder of its filesystem mounted here: not / for a bind mount of a folder
    mount: Mount


def _unescape(field: bytes) -> str:
    return os.fsdecode(_OCTAL.sub(lambda match: bytes([int(match[1], 8)]), field))


def _entries(mountinfo: Path) -> list[_Entry] | None:
    try:
        # Split at newlines and spaces only: a carriage return or a vertical tab in a mount point
        # is not escaped (splitlines would cut its line in two, split() its fields).
        lines = mountinfo.read_bytes().split(b"\n")
    except OSError:
        return None
    entries = []
    for line in lines:
        left, _, right = line.partition(b" - ")
        fields, rest = left.split(b" "), right.split(b" ")
        if len(fields) < 5 or not rest[0]:
            continue
        mount = Mount(Path(_unescape(fields[4])), os.fsdecode(rest[0]))
        mount_id, parent_id, device = (os.fsdecode(field) for field in fields[:3])
        entries.append(_Entry(mount_id, parent_id, device, Path(_unescape(fields[3])), mount))
    return entries


def _is_self_bind(entry: _Entry, parent: _Entry) -> bool:
    """A folder bind-mounted onto itself, as systemd does for each ReadWritePaths= folder inside a
    service's own mount namespace (ProtectSystem=strict): the same files as without it, and a mount
    point that whoever looks from outside the service (`status`) does not see."""
    if parent.device != entry.device or not entry.mount.point.is_relative_to(parent.mount.point):
        return False
    return entry.root == parent.root / entry.mount.point.relative_to(parent.mount.point)


def mount_of(folder: Path, *, mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The mount `folder` is on (symlinks resolved), a folder bound onto itself seen through; None
    if the mount table cannot be read. With the process's own table, the kernel says which mount
    the folder's path reaches (a mount hidden under another one mounted at or above the folder's
    is not it); with another table (a test's), or where it cannot say, the one deepest above it."""
    reached = _mount_id(folder) if mountinfo == MOUNTINFO else None
    entries = _entries(mountinfo)
    if entries is None:
        return None
    by_id = {entry.mount_id: entry for entry in entries}
    entry = by_id.get(reached) if reached is not None else None
    if entry is None:
        entry = _deepest(entries, folder.resolve())
        if entry is None:
            return None
    for _ in entries:  # at most once per line: the kernel's table has no loop, a fake one might
        parent = by_id.get(entry.parent_id)
        if parent is None or not _is_self_bind(entry, parent):
            break
        entry = parent
    return entry.mount


def _deepest(entries: list[_Entry], target: Path) -> _Entry | None:
    best: tuple[int, _Entry] | None = None
    for entry in entries:
        point = entry.mount.point
        if target == point or target.is_relative_to(point):
            # The later of two at one point is mounted over the earlier.
            if best is None or len(point.parts) >= best[0]:
                best = (len(point.parts), entry)
    return best[1] if best else None


def _mount_id(folder: Path) -> str | None:
    """The id of the mount that `folder`'s path reaches (mountinfo's first field), from the kernel
    (/proc/self/fdinfo of the folder opened as a path only); None if it cannot be had."""
    try:
        fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            for line in info:
                name, _, value = line.partition(b":")
                if name == b"mnt_id":
                    return value.strip().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return None


def filesystem_type(folder: Path, *, mountinfo: Path = MOUNTINFO) -> str | None:
    """The type of the filesystem `folder` is on (mount_of), or None if unknown."""
    mount = mount_of(folder, mountinfo=mountinfo)
    return mount.fstype if mount else None


def needs_polling(fstype: str | None) -> bool:
    if fstype is None:
        return False
    return fstype in NETWORK_FILESYSTEMS or fstype == "fuse" or fstype.startswith("fuse.")


def folder_stat(folder: Path) -> os.stat_result | None:
    """`folder`'s stat when it is a folder now; None when it is missing, cannot be looked at, or is
    not a folder (the daemon's site folders are judged away alike in each of these)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info if stat.S_ISDIR(info.st_mode) else None
