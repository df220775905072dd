"""Finding candidate frames in the inbox: which names count, and where the camera comes from."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from watcher.intake.empty_folders import EmptyFolders

logger = logging.getLogger(__name__)

FRAME_SUFFIX = ".bmp"
# Names that writers use while a file is still being produced.
TEMPORARY_SUFFIXES = (".part", ".tmp")
TEMPORARY_PREFIXES = (".", "~")


def is_candidate_name(name: str) -> bool:
    """A frame's file name: `*.bmp` in any case, not a dotfile nor a temporary name."""
    if name.startswith(TEMPORARY_PREFIXES):
        return False
    lowered = name.lower()
    return lowered.endswith(FRAME_SUFFIX) and not lowered.endswith(TEMPORARY_SUFFIXES)


def camera_of(relative: PurePosixPath) -> str | None:
    """`cam-07/x.bmp` was taken by camera `cam-07`; a frame directly in the inbox has none."""
    return relative.parts[0] if len(relative.parts) > 1 else None


class UnlistedFolders:
    """Folders a scan could not list, each said once with its reason while every scan finds it
    so: a `lost+found` that the daemon's user may not enter is one line, not one a rescan. One a
    scan did not find so (listed, or gone) is news again the next time."""

    def __init__(self) -> None:
        self._said: dict[Path, str] = {}
        self._this_scan: dict[Path, str] = {}

    def scan_starts(self) -> None:
        self._this_scan = {}

    def refused(self, folder: Path, error: OSError) -> None:
        reason = str(error)
        level = logging.DEBUG if self._said.get(folder) == reason else logging.WARNING
        self._this_scan[folder] = reason
        logger.log(level, "cannot list %s: %s", folder, error)

    def scan_ended(self) -> None:
        # Only this scan's: a folder deleted since (a camera's hourly folder, say) is not kept.
        self._said = self._this_scan


def scan_inbox(
    inbox: Path, *, unlisted: UnlistedFolders | None = None, empty: EmptyFolders | None = None
) -> Iterator[PurePosixPath]:
    """Every candidate frame under `inbox`, depth first, without following directory links.

    Hidden folders (the in-progress area among them) are skipped. Symlinks and special files
    with a frame's name are yielded: they are claimed and failed, never opened. A folder that
    cannot be listed is warned about at each scan, or once if `unlisted` is kept between scans.
    Each folder listed empty is offered to `empty` (the daemon's rescans only: never an archive's).
    """
    unlisted = unlisted if unlisted is not None else UnlistedFolders()
    unlisted.scan_starts()
    if empty is not None:
        empty.scan_starts()
    stack = [(inbox, PurePosixPath())]
    while stack:
        folder, relative_folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue  # gone since its parent was listed (the inbox itself: said where it is used)
        except OSError as error:
            if not (isinstance(error, NotADirectoryError) and folder != inbox):  # a file now
                unlisted.refused(folder, error)
            continue
        if not entries and empty is not None:
            empty.offer(inbox, relative_folder)
        for entry in sorted(entries, key=lambda item: item.name):
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_folder:
                stack.append((Path(entry.path), relative_folder / entry.name))
            elif is_candidate_name(entry.name):
                yield relative_folder / entry.name
    unlisted.scan_ended()
    if empty is not None:
        empty.scan_ended()
