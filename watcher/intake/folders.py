"""The inbox and output folders at start: made on the first start only, never made again.

A folder that is missing after the daemon once made them all is most likely an unmounted share:
made again, it would land under the empty mount point, on the wrong disk, and frames would go
where nobody looks. So the first start leaves a mark in `paths.data`, and a later start that
finds one missing stops with one line instead (systemd restarts it; the mount may be back).

A share mounted at the folder itself leaves its mount point behind, an empty folder that is not
missing: so the mark also records the mount each folder lives on, and a later start that finds
one on another mount stops the same way (watcher.intake.folder_mounts).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from watcher.intake.folder_mounts import (
    MarkUnreadable,
    Records,
    current_mounts,
    mount_changes,
    read_mark,
    shown,
    write_mark,
)
from watcher.intake.mounts import MOUNTINFO

logger = logging.getLogger(__name__)

FOLDERS_MARK = ".folders-made"


class SiteFolderAway(Exception):
    """A folder the daemon made before is gone, or lives on another mount; the message says which."""


def prepare_folders(
    site: Mapping[str, Path], *, data: Path, inside: Sequence[Path] = (), mountinfo: Path = MOUNTINFO
) -> Records:
    """Make the `site` folders (by config key) and those `inside` them on the first start, and
    record the mount each site folder lives on; afterwards, raise SiteFolderAway for one that is
    gone or on another mount than recorded. Returns the mount each is on now, as recorded or
    confirmed (also when the mark cannot be written): the daemon holds them to it while it runs
    (watcher.intake.site_mounts).

    Raises OSError (with the folder or the mark as its filename) when one cannot be made.
    """
    mark = data / FOLDERS_MARK
    missing = [folder for folder in (*site.values(), *inside) if not folder.is_dir()]
    if mark.exists():
        if missing:
            raise SiteFolderAway(
                f"{missing[0]} is missing (an unmounted share?): it is not made again, since frames "
                f"would land on the wrong disk; mount it, or remove {mark} to have it made"
            )
        return _check_mounts(site, mark=mark, mountinfo=mountinfo)
    for folder in missing:
        folder.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    records = current_mounts(site, mountinfo=mountinfo)
    write_mark(mark, records)
    logger.info("folders made; their mounts recorded in %s: %s", mark, _listed(records))
    return records


def _check_mounts(site: Mapping[str, Path], *, mark: Path, mountinfo: Path) -> Records:
    """SiteFolderAway for a folder on another mount than recorded; a folder first seen at its path
    (a config changed, a mark made before mounts were recorded) has its mount recorded now.

    A mark that cannot be read or is not ours (a hand edit, a damaged disk: it is only ever
    replaced whole) does not stop the site: it is written anew with the mounts of now, as at the
    first start, with a warning; the missing-folder rule holds all the same."""
    try:
        records = read_mark(mark)
    except (OSError, MarkUnreadable) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        logger.warning("%s cannot be read (%s): the folders' mounts are recorded anew", mark, reason)
        records = {}
    known = records or {}
    changes = mount_changes(site, known, mountinfo=mountinfo)
    if changes:
        raise SiteFolderAway(
            f"{changes[0].described()} (an unmounted share?): frames would land on the wrong disk, "
            f"hidden once it is mounted again; mount it, or, if the move is deliberate, remove {mark} "
            "to have the mounts recorded anew at the next start"
        )
    now = current_mounts(site, mountinfo=mountinfo)
    new = {place: mount for place, mount in now.items() if place not in known}
    if records is None:
        logger.info("%s was made before mounts were recorded; recorded now: %s", mark, _listed(new))
    elif not new:
        return now
    try:
        write_mark(mark, {**known, **new})
    except OSError as error:
        logger.warning("cannot record the folders' mounts in %s: %s", mark, error.strerror or error)
        return now
    if records:
        logger.info("mounts recorded in %s for a new folder: %s", mark, _listed(new))
    return now


def _listed(records: Records) -> str:
    return ", ".join(f"{key} on {shown(mount)}" for (key, _), mount in records.items()) or "none known"
