"""The mount each site folder lives on, kept in the folders' mark (watcher.intake.folders).

A share mounted at the folder itself (/mnt/nas/processed), or above it with a processed/ made by
hand while it was away, leaves when unmounted a folder on the local disk like any other: frames
moved there are hidden under the mount point once the share is back, and their rows point at the
share's files. So the first start records, per config key and path, the mount the folder lives on
(its mount point and filesystem type; not the device number, which an NFS mount changes at each
remount), and a later start on another mount stops (watcher.intake.folders); `status` says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from model.registry_files import write_atomically
from watcher.intake.mounts import MOUNTINFO, Mount, folder_stat, mount_of


class MarkUnreadable(Exception):
    """The mark holds something other than what write_mark writes; the message says what."""


# The mount each site folder was recorded on, by its config key and its path then: a key whose
# folder moved in the config keeps the old path's record beside the new one's.
Records = dict[tuple[str, Path], Mount]


@dataclass(frozen=True)
class MountChange:
    """A site folder under another mount point than recorded: found at a start (mount_changes) or
    by `status` (recorded_changes), or while the daemon runs, against the one it started on
    (watcher.intake.site_mounts)."""

    key: str
    folder: Path
    recorded: Mount
    current: Mount

    def described(self) -> str:
        """The one sentence that says so, in the line that stops a start, the line the daemon logs
        while it waits, a batch's wait and `status`'s problem line alike."""
        return (
            f"{self.key} {self.folder} is under the mount point {shown(self.current)}, "
            f"not {shown(self.recorded)} as recorded"
        )


def shown(mount: Mount) -> str:
    return f"{mount.point} ({mount.fstype})"


def read_mark(mark: Path) -> Records | None:
    """The mounts recorded in `mark`; None for an empty mark (made before mounts were recorded).
    Raises OSError when it cannot be read, MarkUnreadable when it is not a record of mounts."""
    text = mark.read_bytes().decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        return {
            (str(item["key"]), Path(item["folder"])): Mount(Path(item["mount"]), str(item["type"]))
            for item in json.loads(text)["mounts"]
        }
    except (ValueError, LookupError, TypeError, AttributeError) as error:
        raise MarkUnreadable(f"not a record of mounts ({type(error).__name__}: {error})") from None


def write_mark(mark: Path, records: Records) -> None:
    """`records` in `mark`, replaced whole (a rename), so that it is never half written. Raises
    OSError with the mark as its filename."""
    mounts = [
        {"key": key, "folder": str(folder), "mount": str(mount.point), "type": mount.fstype}
        for (key, folder), mount in records.items()
    ]
    try:
        write_atomically(mark, json.dumps({"mounts": mounts}, indent=1) + "\n")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(mark)) from None


def current_mounts(folders: Mapping[str, Path], *, mountinfo: Path = MOUNTINFO) -> Records:
    """The mount each folder lives on now; one whose mount cannot be known (no mount table) is left out."""
    return {
        (key, folder): mount
        for key, folder in folders.items()
        if (mount := mount_of(folder, mountinfo=mountinfo)) is not None
    }


def mount_changes(
    folders: Mapping[str, Path], records: Records, *, mountinfo: Path = MOUNTINFO
) -> list[MountChange]:
    """The folders on another mount than recorded for their key and path. A path not recorded for
    its key (a first sight: the config changed) is judged only against the mount points recorded
    for other paths (_under_a_point_gone). A folder missing or that cannot be looked at is not
    judged here (prepare_folders judges a missing one itself)."""
    changes = []
    for key, folder in folders.items():
        recorded = records.get((key, folder))
        if folder_stat(folder) is None:
            continue
        current = mount_of(folder, mountinfo=mountinfo)
        if current is None:
            continue
        if recorded is None:
            recorded = _under_a_point_gone(folder, current, records)
        # The mount point alone: another filesystem at the same point is the same place (nfs
        # remounted as nfs4, an automount's autofs before its share is mounted on it).
        if recorded is not None and current.point != recorded.point:
            changes.append(MountChange(key, folder, recorded, current))
    return changes


def _under_a_point_gone(folder: Path, current: Mount, records: Records) -> Mount | None:
    """A recorded mount whose point `folder`, first seen at its path, is under, though it is now on
    a mount above that point: a share gone, and the config's path now leads under its empty mount
    point (a symlink on the share that the config resolved, a folder made there by hand)."""
    for recorded in records.values():
        point = recorded.point
        if point != current.point and folder.is_relative_to(point) and point.is_relative_to(current.point):
            return recorded
    return None


def recorded_changes(
    folders: Mapping[str, Path], *, mark: Path, mountinfo: Path = MOUNTINFO
) -> list[MountChange]:
    """mount_changes against the mounts in `mark`, for `status`, which only reads: a mark it may not
    read, or empty, or not ours, records nothing to compare (`watch` records it anew at its start)."""
    try:
        records = read_mark(mark)
    except (OSError, MarkUnreadable):
        return []
    return mount_changes(folders, records or {}, mountinfo=mountinfo)
