"""The crash-loop breaker: a frame that keeps killing the daemon is failed, not retried forever.

Frames still in an in-progress area when its daemon starts were being worked on when the previous
run died, unless that run stopped cleanly (it leaves `<area>/.clean-stop`; a SIGTERM can leave
frames claimed whose batch waited for the database), or another instance that had adopted them
after that death stopped cleanly holding them (it leaves `<area>/.handed-on`: the frames are no
suspects, yet the area's own instance did crash). After a crash they are suspects: each is
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
# Another instance's mark: it stopped cleanly holding frames adopted from this dead area's instance.
HANDED_ON_FILE = ".handed-on"


class LastStop(Enum):
    """How the last run that held an area's frames ended, as its marks tell."""

    CRASHED = "crashed"  # no mark: its frames are suspects
    HANDED_ON = "handed on"  # its instance died; an adopter of its frames stopped cleanly since
    CLEAN = "clean"  # its own instance stopped cleanly


def crash_reason() -> str:
    return f"crashed the daemon {MAX_CRASHES} times"


def mark_clean_stop(area: Path, *, last: LastStop = LastStop.CLEAN) -> None:
    """The run holding the area's frames ends cleanly: those left claimed (parked) are not
    suspects at the next start. `last` is HANDED_ON for a dead instance's area whose own last
    stop was not clean: `status` and the crash count still see that instance's crash."""
    name = HANDED_ON_FILE if last is LastStop.HANDED_ON else CLEAN_STOP_FILE
    with contextlib.suppress(OSError):
        (area / name).touch()


def stopped_cleanly(area: Path) -> bool:
    """Whether the area's own instance stopped cleanly last time (its mark is left where it is)."""
    return (area / CLEAN_STOP_FILE).exists()


def take_last_stop(area: Path) -> LastStop:
    """How the last run holding `area`'s frames ended; its marks are removed, so that a crash of
    this run is never mistaken for a clean stop."""
    found = [_taken(area / name) for name in (CLEAN_STOP_FILE, HANDED_ON_FILE)]
    if found[0]:
        return LastStop.CLEAN
    return LastStop.HANDED_ON if found[1] else LastStop.CRASHED


def _taken(mark: Path) -> bool:
    try:
        mark.unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        logger.warning("cannot remove %s: %s", mark, error.strerror)
    return True


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
        # cannot be torn apart).
        if not _written_over(path, text):
            raise


def _written_over(path: Path, text: bytes) -> bool:
    """`text` written over `path`'s bytes in place, where it is a file of the same length."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.fstat(descriptor).st_size == len(text) and os.pwrite(descriptor, text, 0) == len(text)
    except OSError:
        return False
    finally:
        os.close(descriptor)
