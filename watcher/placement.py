"""Where a finished frame goes in `processed/` or `failed/`, and the move there, frame by frame.

A frame's own path is kept when it can be: its inbox path as storable text (see watcher.names).
When that path cannot exist (too long with the output folder in front of it) the frame goes
directly in the output folder under its key and name instead. Trouble with one destination (a
file where its camera folder should be, a folder the daemon may not write, a name the filesystem
refuses) is that frame's problem alone: the caller fails the frame, or moves it flat.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from watcher.claiming import ClaimedFrame
from watcher.moving import is_placement_error, move_no_clobber, reserve_destination
from watcher.names import destination_relative, fits, flat_name

logger = logging.getLogger(__name__)


def place(root: Path, frame: ClaimedFrame, *, taken: set[Path]) -> Path:
    """Reserve the frame's destination under `root`, its folder made; OSError if it cannot be."""
    relative = destination_relative(frame.relative)
    if not fits(root / relative):
        return place_flat(root, frame, taken=taken)
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    return reserve_destination(root, relative, taken=taken)


def place_flat(root: Path, frame: ClaimedFrame, *, taken: set[Path]) -> Path:
    """Reserve a name directly in `root`, which always fits."""
    return reserve_destination(root, PurePosixPath(flat_name(frame.key, frame.relative)), taken=taken)


def move_frame(frame: ClaimedFrame, stored: Path, *, root: Path, sha256: str | None) -> Path:
    """Move the claimed file to `stored` (or the next free name); returns where it went.

    Repeating it after an interruption finishes what is left: a file already moved (its claim is
    gone, `stored` is there) is done. A destination that turned bad between the commit and the
    move (a file now in the way, say) sends the frame flat into `root`.
    """
    if not os.path.lexists(frame.work_path):
        if os.path.lexists(stored):
            return stored  # moved by an earlier attempt at this batch
        raise FileNotFoundError(f"claimed file {frame.work_path} is gone and {stored} is not there")
    try:
        return move_no_clobber(frame.work_path, stored, sha256=sha256)
    except OSError as error:
        if not is_placement_error(error):
            raise
        logger.warning(
            "cannot move %s to %s (%s): moving it into %s", frame.relative, stored, error.strerror, root
        )
        return move_no_clobber(frame.work_path, root / flat_name(frame.key, frame.relative), sha256=sha256)
