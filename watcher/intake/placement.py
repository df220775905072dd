"""Where a finished frame goes in `processed/` or `failed/`, and the move there, frame by frame.

A frame's own path is kept when it can be: its inbox path as storable text (see watcher.intake.names).
When that path cannot exist (too long with the output folder in front of it) the frame goes
directly in the output folder under its key and name instead. Trouble with one destination (a
file where its camera folder should be, a folder the daemon may not write, a name the filesystem
refuses) is that frame's problem alone: the caller fails the frame, or moves it flat.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from watcher.intake import relocations
from watcher.intake.claimed import ClaimedFrame
from watcher.intake.held_folders import BY_PATH, Reach
from watcher.intake.held_lookups import Lookup
from watcher.intake.moving import is_placement_error, make_folders, move_no_clobber, reserve_destination
from watcher.intake.names import destination_relative, fits, flat_name

logger = logging.getLogger(__name__)

# Inside the in-progress root (`<inbox>/.in-progress/`), beside the instances' areas.
UNMOVABLE_DIRNAME = ".unmovable"


def place(
    root: Path,
    frame: ClaimedFrame,
    *,
    taken: set[str],
    made: set[str] | None = None,
    exists: Lookup = os.path.lexists,
) -> str:
    """Reserve the frame's destination under `root`, its folder made; OSError if it cannot be.
    `taken` holds the destinations reserved so far for the batch, `made` the folders made for it
    (each looked at once a batch, not once a frame), all as text: the destination is returned as
    the row holds it, and no Path is made a frame. `exists` looks at names on disk (see
    reserve_destination)."""
    wanted = joined(root, destination_relative(frame.relative))
    if not fits(wanted):
        return place_flat(root, frame, taken=taken, exists=exists)
    folder = os.path.dirname(wanted)
    if made is None or folder not in made:
        make_folders(Path(folder))
        if made is not None:
            made.add(folder)
    return reserve_destination(wanted, taken=taken, exists=exists)


def joined(root: Path, relative: PurePosixPath) -> str:
    """`root` and a relative, normalised path (a frame's) joined as text, as os.path.join puts
    them, which costs ten times as much (it is done for every frame)."""
    text = str(root)
    return f"{text}{relative}" if text.endswith("/") else f"{text}/{relative}"


def place_flat(root: Path, frame: ClaimedFrame, *, taken: set[str], exists: Lookup = os.path.lexists) -> str:
    """Reserve a name directly in `root`, which always fits."""
    return reserve_destination(
        os.path.join(root, flat_name(frame.key, frame.relative)), taken=taken, exists=exists
    )


def move_frame(
    frame: ClaimedFrame, stored: Path, *, root: Path, sha256: str | None, reach: Reach = BY_PATH
) -> Path:
    """Move the claimed file to `stored` (or the next free name); returns where it went. Names
    under `root` are made through `reach`, a handle on it (see watcher.intake.held_folders).

    Repeating it after an interruption finishes what is left: a file already moved (its claim is
    gone) is done, where its note says if it went elsewhere (see watcher.intake.relocations). A
    destination that turned bad between the commit and the move (a file now in the way, say) sends
    the frame flat into `root`. Anywhere but `stored` is noted before the file goes there.
    """
    if not os.path.lexists(frame.work_path):
        elsewhere = relocations.noted(frame)
        if elsewhere is not None:
            return elsewhere  # moved by an earlier attempt, before its row could say where
        if not reach.lexists(stored):
            # Nothing left to move, whatever happened to it: its row stays, and so does the daemon.
            logger.error("frame %s: its claimed file is gone and %s is not there", frame.relative, stored)
        return stored  # moved by an earlier attempt at this batch

    def announce(destination: Path) -> None:
        relocations.note(frame, destination)

    try:
        return move_no_clobber(frame.work_path, stored, sha256=sha256, before_numbered=announce, reach=reach)
    except OSError as error:
        if not is_placement_error(error):
            raise
        logger.warning(
            "cannot move %s to %s (%s): moving it into %s", frame.relative, stored, error.strerror, root
        )
    flat = root / flat_name(frame.key, frame.relative)
    announce(flat)
    try:
        return move_no_clobber(frame.work_path, flat, sha256=sha256, before_numbered=announce, reach=reach)
    except OSError as error:
        if not is_placement_error(error):
            raise
        return _set_aside(frame, error)


def _set_aside(frame: ClaimedFrame, error: OSError) -> Path:
    """The last resort for a file that can go nowhere in the output folders (one the daemon may not
    read, on another filesystem): renamed, on its own filesystem, out of the area that recovery
    works through, so it never stops the daemon again; its row's stored_path says where."""
    aside = frame.area.parent / UNMOVABLE_DIRNAME
    make_folders(aside)
    final = aside / flat_name(frame.key, frame.relative)
    relocations.note(frame, final)
    os.rename(frame.work_path, final)
    logger.error(
        "frame %s cannot be moved to processed/ or failed/ (%s): left at %s",
        frame.relative,
        error.strerror or error,
        final,
    )
    return final


class OutputFolderAway(FileNotFoundError):
    """`processed/` or `failed/` is gone, or under another mount point than at start (an unmounted
    share): the batch waits for it to return."""


class ClaimsAway(FileNotFoundError):
    """The in-progress area's path no longer leads to the area holding the batch's claims (the
    inbox replaced, or away): the batch waits until they are brought over (InstanceLock.keep),
    rather than find its files gone (read as failed, moves finding nothing)."""
