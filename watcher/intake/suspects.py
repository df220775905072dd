"""The crash-loop breaker: a frame that keeps killing the daemon is failed, not retried forever.

Frames still in an in-progress area when its daemon starts were being worked on when the previous
run died, unless that run stopped cleanly (it leaves `<area>/.clean-stop`; a SIGTERM can leave
frames claimed whose batch waited for the database), or another instance that had adopted them
after that death stopped cleanly holding them (its `.clean-stop` says `handed on`: the frames
are no suspects, yet the area's own instance did crash). After a crash they are suspects: each is
processed alone, so an innocent frame never shares a batch with the one that kills the daemon,
and before that its count of crashes is raised in a file beside the claim (`.attempts-<key>` in the
area, or `.attempts` in the claim's folder: see watcher.intake.claiming), so it survives restarts:

- a frame left over from a crash has been in progress during 1 crash (its `.attempts` is absent);
- processing it alone, the file says 2: if the daemon dies now, that is its second crash;
- one whose count has reached `MAX_CRASHES` goes to `failed/` without being opened again, its
  count then set to `FAILED_UNOPENED`, which no attempt writes: if that failure's row has to wait
  (the database away), its retry, in this run or after a restart, knows it for a crasher.
"""

from __future__ import annotations

import contextlib
import logging
import os
from enum import Enum
from pathlib import Path

from watcher.intake.claimed import ClaimedFrame

logger = logging.getLogger(__name__)

MAX_CRASHES = 3
# A count above any an attempt writes (at most MAX_CRASHES): the frame was failed unopened.
FAILED_UNOPENED = MAX_CRASHES + 1
CLEAN_STOP_FILE = ".clean-stop"
# What the mark holds when an adopter of a dead instance's frames made it (its own instance's is
# empty): the frames are no suspects, yet that instance did not stop cleanly. One file for both,
# so that a node of an earlier version, which knows the file alone, takes such frames for a clean
# stop's too, and removes the mark with the area.
HANDED_ON = b"handed on\n"


class LastStop(Enum):
    """How the last run that held an area's frames ended, as its mark tells."""

    CRASHED = "crashed"  # no mark: its frames are suspects
    HANDED_ON = "handed on"  # its instance died; an adopter of its frames stopped cleanly since
    CLEAN = "clean"  # its own instance stopped cleanly


def crash_reason() -> str:
    return f"crashed the daemon {MAX_CRASHES} times"


def mark_clean_stop(area: Path, *, last: LastStop = LastStop.CLEAN) -> bool:
    """The run holding the area's frames ends cleanly: those left claimed (parked) are not
    suspects at the next start. `last` is HANDED_ON for a dead instance's area whose own last
    stop was not clean: `status` and the crash count still see that instance's crash. False when
    no mark could be made (a filesystem out of inodes, say): the next start takes them for a
    crash's."""
    try:
        # O_NONBLOCK: a FIFO planted under the name must not hold the stop.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
        descriptor = os.open(area / CLEAN_STOP_FILE, flags, 0o644)
    except OSError:
        return False
    try:
        if last is LastStop.HANDED_ON:
            os.write(descriptor, HANDED_ON)
    except OSError as error:
        # Made empty, the mark says its instance stopped cleanly: the frames are right, the
        # instance's crash goes untold.
        logger.warning("cannot write %s: %s", area / CLEAN_STOP_FILE, error.strerror)
    finally:
        os.close(descriptor)
    return True


def stopped_cleanly(area: Path) -> bool:
    """Whether the area's own instance stopped cleanly last time (its mark is left where it is)."""
    return _last_stop(area / CLEAN_STOP_FILE) is LastStop.CLEAN


def take_last_stop(area: Path) -> LastStop:
    """How the last run holding `area`'s frames ended; its mark is removed, so that a crash of
    this run is never mistaken for a clean stop."""
    mark = area / CLEAN_STOP_FILE
    last = _last_stop(mark)
    if last is not LastStop.CRASHED:
        try:
            mark.unlink()
        except FileNotFoundError:
            pass  # taken by another meanwhile: what it said stands
        except OSError as error:
            logger.warning("cannot remove %s: %s", mark, error.strerror)
    return last


def _last_stop(mark: Path) -> LastStop:
    try:
        descriptor = os.open(mark, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return LastStop.CRASHED
    except OSError:
        return LastStop.CLEAN  # there, if unreadable: as an earlier version takes it
    try:
        said = os.read(descriptor, len(HANDED_ON) + 1)
    except OSError:
        said = b""
    finally:
        os.close(descriptor)
    return LastStop.HANDED_ON if said == HANDED_ON else LastStop.CLEAN


def crashes_survived(frame: ClaimedFrame) -> int:
    """How many crashes the frame has been in progress during (1 when it has no count yet)."""
    try:
        return max(int(frame.attempts_path.read_text(encoding="ascii").strip()), 1)
    except (OSError, ValueError):
        return 1  # absent, or torn by the crash it counts


def failed_unopened(frame: ClaimedFrame) -> bool:
    """Whether the frame was failed unopened as a crasher (see FAILED_UNOPENED). A count of
    MAX_CRASHES alone does not say so: it is also the count raised before a last attempt."""
    return crashes_survived(frame) >= FAILED_UNOPENED


def mark_failed_unopened(frame: ClaimedFrame) -> str | None:
    """Set the frame's count to FAILED_UNOPENED; why it could not be (its area turned read-only,
    say), or None."""
    try:
        record_attempt(frame, FAILED_UNOPENED)
    except OSError as error:
        return error.strerror or str(error)
    return None


def record_attempt(frame: ClaimedFrame, crashes: int) -> None:
    """Before the frame is processed alone: if the daemon dies now, that is crash `crashes`."""
    path = frame.attempts_path
    text = f"{crashes}\n".encode("ascii")
    staging = path.with_name(f"{path.name}.new")
    try:
        staging.write_bytes(text)
        os.replace(staging, path)
    except OSError:
        with contextlib.suppress(OSError):
            staging.unlink()
        # A full disk has no block for a new file, but the count's own file has one: a count is
        # one digit, so the new one is written over the old where it is (two bytes in one block
        # cannot be torn apart). A copy-on-write filesystem (btrfs, ZFS) needs room for that too.
        if not _written_over(path, text):
            raise


def _written_over(path: Path, text: bytes) -> bool:
    """`text` written over `path`'s bytes in place, where it is a file of the same length."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.fstat(descriptor).st_size == len(text) and os.pwrite(descriptor, text, 0) == len(text)
    except OSError:
        return False
    finally:
        os.close(descriptor)
