"""Taking a frame out of the inbox by one atomic rename into the in-progress area.

    <inbox>/cam-07/x.bmp  →  <inbox>/.in-progress/<instance>/<frame key>/cam-07/x.bmp

The folder name is the frame's key (committed with its row, so a frame re-processed after a
crash is recognised) and the path inside it keeps the original inbox-relative path.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from watcher.discovery import camera_of

logger = logging.getLogger(__name__)


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

    @property
    def key_dir(self) -> Path:
        return self.work_path.parents[len(self.relative.parts) - 1]


def claim(inbox: Path, area: Path, relative: PurePosixPath) -> ClaimedFrame | None:
    """Move one frame into this instance's in-progress area; None if it vanished (or another
    instance claimed it) first."""
    key = uuid.uuid4().hex
    work_path = area / key / relative
    work_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # rename() moves a symlink or special file itself, never what it points to.
        os.rename(inbox / relative, work_path)
    except FileNotFoundError:
        shutil.rmtree(area / key, ignore_errors=True)
        logger.debug("%s vanished before it could be claimed", relative)
        return None
    return ClaimedFrame(
        key=key,
        relative=relative,
        work_path=work_path,
        received_at=datetime.now(UTC),
        source_dir=(inbox / relative).parent,
    )


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
        files = [path for path in key_dir.rglob("*") if not path.is_dir() or path.is_symlink()]
        if not files:
            shutil.rmtree(key_dir, ignore_errors=True)
            continue
        for work_path in files:
            relative = PurePosixPath(work_path.relative_to(key_dir).as_posix())
            received = datetime.fromtimestamp(key_dir.lstat().st_mtime, UTC)
            frames.append(
                ClaimedFrame(key=key_dir.name, relative=relative, work_path=work_path, received_at=received)
            )
    return frames
