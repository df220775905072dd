"""What filesystem a folder lives on, to tell whether inotify events can be trusted there."""

from __future__ import annotations

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


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def filesystem_type(folder: Path, *, mountinfo: Path = MOUNTINFO) -> str | None:
    """The type of the filesystem mounted deepest above `folder`, or None if unknown."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = folder.resolve()
    best: tuple[int, str] | None = None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or not rest:
            continue
        mount_point = Path(_unescape(fields[4]))
        if target == mount_point or target.is_relative_to(mount_point):
            depth = len(mount_point.parts)
            if best is None or depth >= best[0]:
                best = (depth, rest[0])
    return best[1] if best else None


def needs_polling(fstype: str | None) -> bool:
    if fstype is None:
        return False
    return fstype in NETWORK_FILESYSTEMS or fstype == "fuse" or fstype.startswith("fuse.")
