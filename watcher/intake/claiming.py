"""Taking a frame out of the inbox by one atomic rename into the in-progress area.

    <inbox>/cam-07/x.bmp  →  <inbox>/.in-progress/<instance>/<frame key>/cam-07/x.bmp

The folder name is the frame's key (committed with its row, so a frame re-processed after a
crash is recognised) and the path inside it keeps the original inbox-relative path. A path too
long for that (the area adds about 60 bytes to a path that may already be near PATH_MAX) is
claimed flat instead (and so is one nested deeper than MAX_NESTED_PARTS), with its inbox path
written beside it first:

    <inbox>/.in-progress/<instance>/<frame key>/frame      the file
    <inbox>/.in-progress/<instance>/<frame key>/.source    its inbox-relative path (raw bytes)

Names starting with '.' inside a key folder are bookkeeping, never frames (the inbox never
yields such names): `.source` above, `.attempts` (see watcher.intake.suspects).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path, PurePosixPath

from watcher.intake.discovery import camera_of
from watcher.intake.moving import make_folders

logger = logging.getLogger(__name__)

SOURCE_FILE = ".source"
FLAT_NAME = "frame"
# Deeper paths are claimed flat too: Python 3.11's rglob and rmtree recurse once per level.
MAX_NESTED_PARTS = 32


class ClaimRefused(Exception):
    """The frame cannot be taken out of the inbox (its folder is not writable for the daemon, say);
    it stays where it is, untouched, and the message says why."""


@dataclass(frozen=True)
class ClaimedFrame:
    key: str
    relative: PurePosixPath  # original path, relative to the inbox
    work_path: Path  # where the file is while it is being worked on
    received_at: datetime
    # The inbox folder the frame was renamed out of (unknown for frames recovered at start).
    source_dir: Path | None = None

    @property
    def camera(self) -> str | None:
        return camera_of(self.relative)

    @cached_property
    def key_dir(self) -> Path:
        if self.work_path.name == FLAT_NAME:  # claimed flat: a frame's own name ends in .bmp
            return self.work_path.parent
        return self.work_path.parents[len(self.relative.parts) - 1]


def claim(inbox: Path, area: Path, relative: PurePosixPath) -> ClaimedFrame | None:
    """Move one frame into this instance's in-progress area; None if it vanished (or another
    instance claimed it) first; ClaimRefused when the filesystem will not let it go."""
    key = uuid.uuid4().hex
    try:
        if len(relative.parts) > MAX_NESTED_PARTS:
            work_path = _claim_flat(inbox, area, key, relative)
        else:
            try:
                work_path = _claim_nested(inbox, area, key, relative)
            except OSError as error:
                if error.errno != errno.ENAMETOOLONG:
                    raise
                shutil.rmtree(area / key, ignore_errors=True)
                work_path = _claim_flat(inbox, area, key, relative)
    except FileNotFoundError:
        shutil.rmtree(area / key, ignore_errors=True)
        logger.debug("%s vanished before it could be claimed", relative)
        return None
    except OSError as error:
        shutil.rmtree(area / key, ignore_errors=True)
        raise ClaimRefused(f"cannot take it out of the inbox: {error.strerror or error}") from None
    return ClaimedFrame(
        key=key,
        relative=relative,
        work_path=work_path,
        received_at=datetime.now(UTC),
        source_dir=(inbox / relative).parent,
    )


def _claim_nested(inbox: Path, area: Path, key: str, relative: PurePosixPath) -> Path:
    work_path = area / key / relative
    try:
        # The key is new: its folders are made top down, one mkdir each, without looking first.
        folder = os.path.join(area, key)
        os.mkdir(folder)
        for part in relative.parts[:-1]:
            folder = os.path.join(folder, part)
            os.mkdir(folder)
    except FileNotFoundError:
        make_folders(work_path.parent)  # the area itself is gone: made again, as at start
    # rename() moves a symlink or special file itself, never what it points to.
    os.rename(inbox / relative, work_path)
    return work_path


def _claim_flat(inbox: Path, area: Path, key: str, relative: PurePosixPath) -> Path:
    key_dir = area / key
    key_dir.mkdir()
    # Written (and flushed) before the rename: recovery must always know where the frame came from.
    with (key_dir / SOURCE_FILE).open("wb") as handle:
        handle.write(os.fsencode(str(relative)))
        handle.flush()
        os.fsync(handle.fileno())
    work_path = key_dir / FLAT_NAME
    os.rename(inbox / relative, work_path)
    return work_path


def release(frame: ClaimedFrame) -> None:
    """Remove the frame's (now empty) folder from the in-progress area."""
    # The folders are known and empty: removing them one by one is a syscall each, where
    # rmtree's safe walk opens and lists every level (a tenth of a frame's file handling).
    folder = frame.work_path.parent
    try:
        while True:
            os.rmdir(folder)
            if folder == frame.key_dir:
                return
            folder = folder.parent
    except FileNotFoundError:
        if folder != frame.key_dir:
            shutil.rmtree(frame.key_dir, ignore_errors=True)
    except OSError:
        # Not empty (something else landed there) or not removable: the thorough way.
        shutil.rmtree(frame.key_dir, ignore_errors=True)


def claimed_frames(area: Path) -> list[ClaimedFrame]:
    """Frames an instance left in its in-progress area, for recovery."""
    frames: list[ClaimedFrame] = []
    if not area.is_dir():
        return frames
    for key_dir in sorted(area.iterdir()):
        if key_dir.name.startswith(".") or not key_dir.is_dir() or key_dir.is_symlink():
            continue  # bookkeeping of the area (see watcher.intake.suspects), not a claim
        received = datetime.fromtimestamp(key_dir.lstat().st_mtime, UTC)
        source = key_dir / SOURCE_FILE
        if source.is_file() and (key_dir / FLAT_NAME).exists():
            relative = PurePosixPath(os.fsdecode(source.read_bytes()))
            frames.append(
                ClaimedFrame(
                    key=key_dir.name, relative=relative, work_path=key_dir / FLAT_NAME, received_at=received
                )
            )
            continue
        files = [
            path
            for path in key_dir.rglob("*")
            if (not path.is_dir() or path.is_symlink())
            and not path.relative_to(key_dir).parts[0].startswith(".")
        ]
        if not files:
            shutil.rmtree(key_dir, ignore_errors=True)
            continue
        for work_path in files:
            relative = PurePosixPath(work_path.relative_to(key_dir).as_posix())
            frames.append(
                ClaimedFrame(key=key_dir.name, relative=relative, work_path=work_path, received_at=received)
            )
    return frames
