"""The inbox and output folders at start: made on the first start only, never made again.

A folder that is missing after the daemon once made them all is most likely an unmounted share:
made again, it would land under the empty mount point, on the wrong disk, and frames would go
where nobody looks. So the first start leaves a mark in `paths.data`, and a later start that
finds one missing stops with one line instead (systemd restarts it; the mount may be back).
"""

from __future__ import annotations

from pathlib import Path

FOLDERS_MARK = ".folders-made"


class FolderMissing(Exception):
    """A folder the daemon made before is gone; the message names it."""


def prepare_folders(folders: list[Path], *, data: Path) -> None:
    """Make `folders` on the first start; afterwards, raise FolderMissing for one that is gone.

    Raises OSError (with the folder as its filename) when one cannot be made.
    """
    mark = data / FOLDERS_MARK
    missing = [folder for folder in folders if not folder.is_dir()]
    if missing and mark.exists():
        raise FolderMissing(
            f"{missing[0]} is missing (an unmounted share?): it is not made again, since frames "
            f"would land on the wrong disk; mount it, or remove {mark} to have it made"
        )
    for folder in missing:
        folder.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    mark.touch()
