"""Where a frame's file went when it could not go where its row says, noted before it goes there.

A committed frame's row names its destination (see watcher.pipeline.recording). When that name is
taken by the time the file moves (another instance's frame, a file put there by hand) or its
folder refuses it, the file goes to another name (`x-1.bmp`, flat, or set aside) and the row is
corrected after the batch's moves (see watcher.pipeline.delivery). A kill, or a batch parked on a
full disk, between that move and the correction would leave the row naming the wrong file for
good: the claim went with the move, so recovery would know nothing of the frame. So before a file
is moved anywhere but its row's destination, that place is noted beside its claim:

    <area>/.moved-<frame key>   the other destination, as raw bytes

A note whose frame is still claimed is stale (its move did not happen, or will be done again);
one whose frame has left its claim says where the file is. A note goes once the row says so.
Only a frame whose reserved name was lost ever has one: nothing is written for the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from watcher.intake.claimed import ClaimedFrame
from watcher.intake.durability import fsync_dir

logger = logging.getLogger(__name__)

NOTE_PREFIX = ".moved-"


def note_path(area: Path, key: str) -> Path:
    return area / f"{NOTE_PREFIX}{key}"


def note(frame: ClaimedFrame, destination: Path) -> None:
    """Note, durably, that `frame` is about to be moved to `destination` (not its row's)."""
    final = note_path(frame.area, frame.key)
    # Written aside, then renamed over the last note: a kill mid-write never leaves half a path.
    staging = final.with_name(f"{final.name}.new")
    with staging.open("wb") as handle:
        handle.write(os.fsencode(destination))
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(staging, final)
    fsync_dir(frame.area)  # on disk before the move it announces


def noted(frame: ClaimedFrame) -> Path | None:
    """Where the note of `frame` says its file went, if it has one."""
    try:
        return Path(os.fsdecode(note_path(frame.area, frame.key).read_bytes()))
    except FileNotFoundError:
        return None


def forget(frames: Iterable[ClaimedFrame]) -> None:
    """Their rows say where their files are (or their moves are done again): notes removed."""
    for frame in frames:
        with contextlib.suppress(FileNotFoundError):
            note_path(frame.area, frame.key).unlink()


def left_behind(area: Path, claimed: set[str]) -> dict[str, str]:
    """Recovery: the notes in `area` of frames no longer claimed (key → where each file went, as
    rows hold it). The notes of frames still claimed are stale: removed."""
    found: dict[str, str] = {}
    try:
        names = [entry.name for entry in os.scandir(area) if entry.name.startswith(NOTE_PREFIX)]
    except FileNotFoundError:
        return found
    for name in names:
        key = name.removeprefix(NOTE_PREFIX)
        if key.endswith(".new") or key in claimed:
            with contextlib.suppress(FileNotFoundError):
                (area / name).unlink()
            continue
        destination = os.fsdecode((area / name).read_bytes())
        if not os.path.lexists(destination):
            # Its claim left only by that move, so the file went there. Not seen now (a share not
            # mounted on its mount point yet, a file taken away since), the row still says so:
            # the name it holds was taken by another file, the reason for the note.
            logger.warning("frame %s was moved to %s, which is not there now", key, destination)
        found[key] = destination
    return found
