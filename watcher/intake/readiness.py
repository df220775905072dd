"""Deciding when a frame is completely written, so it is never read early.

A BMP header declares the file's size: a frame is complete when that many bytes are present, and
it is read only once its size and modification time have also been stable for `settle_ms`, or
once an event said its writer closed it and nothing changed since.
A frame that stays incomplete with no writes for `readiness_timeout_s` is given up as truncated.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from model.images import BMP_MAGIC, BMP_SIZE_FIELD, MIN_BMP_SIZE
from watcher.intake.unlooked import UnlookedFiles

logger = logging.getLogger(__name__)


class Verdict(StrEnum):
    READY = "ready"  # complete and settled: claim it
    SETTLING = "settling"  # complete but changed too recently
    INCOMPLETE = "incomplete"  # fewer bytes than declared, or too few to tell
    TIMED_OUT = "timed_out"  # incomplete, and no writes for the readiness timeout
    SPECIAL = "special"  # a symlink, FIFO, socket or device with a frame's name
    GONE = "gone"  # vanished since discovery
    UNREACHABLE = "unreachable"  # its whole path is longer than PATH_MAX: nothing can open it


@dataclass
class _Observation:
    size: int
    mtime_ns: int
    unchanged_since: float  # monotonic time this size and mtime were first seen
    declared_size: int | None


def declared_bmp_size(path: Path) -> int | None:
    """The file size a BMP header declares, or None when the file does not say (yet)."""
    try:
        # O_NONBLOCK | O_NOFOLLOW: a FIFO or a link swapped in since lstat is never waited on or
        # followed.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        head = os.read(descriptor, BMP_SIZE_FIELD.size) if stat.S_ISREG(os.fstat(descriptor).st_mode) else b""
    except OSError:
        return None
    finally:
        os.close(descriptor)
    if len(head) < BMP_SIZE_FIELD.size:
        return None
    magic, declared = BMP_SIZE_FIELD.unpack(head)
    if magic != BMP_MAGIC or declared < MIN_BMP_SIZE:
        # Not a BMP (decoding will say so), or a writer that leaves the field zero: stability
        # alone decides.
        return None
    return int(declared)


class ReadinessTracker:
    """Remembers what each waiting file looked like, to tell written-and-still from in-flux."""

    def __init__(self, *, settle_s: float, timeout_s: float) -> None:
        self._settle_s = settle_s
        self._timeout_s = timeout_s
        self._seen: dict[PurePosixPath, _Observation] = {}
        # Frames whose writer closed them after writing (inotify says so), with the (size, mtime)
        # they had then: a later write makes the mark stale.
        self._finished: dict[PurePosixPath, tuple[int, int]] = {}
        self._unlooked = UnlookedFiles(timeout_s=timeout_s)  # lstat failed: see watcher.intake.unlooked

    def forget(self, relative: PurePosixPath) -> None:
        self._seen.pop(relative, None)
        self._finished.pop(relative, None)
        self._unlooked.looked_at(relative)

    def writers_finished(self, root: Path, paths: set[PurePosixPath]) -> None:
        for relative in paths:
            try:
                info = (root / relative).lstat()
            except OSError:
                continue  # gone already; assess will say so
            self._finished[relative] = (info.st_size, info.st_mtime_ns)

    def assess(self, root: Path, relative: PurePosixPath) -> Verdict:
        looked = look(root / relative, before=self._seen.get(relative))
        if isinstance(looked, Verdict):
            if looked == Verdict.GONE:
                self.forget(relative)
            elif looked == Verdict.INCOMPLETE:  # from look: it could not be looked at
                self.not_looked_at(relative)
            return looked
        return self.judge(relative, looked)

    def not_looked_at(self, relative: PurePosixPath) -> None:
        """A file whose lstat failed: it waits in the inbox, and `say_unlooked` tells why."""
        self._unlooked.add(relative)

    def say_unlooked(self, root: Path) -> None:
        """Called once a turn: one warning per folder that has had files not looked at for
        `timeout_s` (see watcher.intake.unlooked)."""
        self._unlooked.say(root)

    def finished_mark(self, relative: PurePosixPath) -> tuple[int, int] | None:
        """(size, mtime_ns) the frame had when its writer closed it, if an event said so."""
        return self._finished.get(relative)

    def judge(self, relative: PurePosixPath, looked: Look) -> Verdict:
        """The verdict on what `look` saw of a regular file, with what was seen of it before."""
        now = time.monotonic()
        self._unlooked.looked_at(relative)  # looked at now, whatever it was before
        previous = self._seen.get(relative)
        if previous is None or (previous.size, previous.mtime_ns) != (looked.size, looked.mtime_ns):
            previous = _Observation(
                size=looked.size,
                mtime_ns=looked.mtime_ns,
                unchanged_since=now,
                declared_size=looked.declared_size,
            )
            self._seen[relative] = previous
        unchanged_s = now - previous.unchanged_since
        return looked.verdict(
            settle_s=self._settle_s,
            timeout_s=self._timeout_s,
            finished=self._finished.get(relative),
            unchanged_s=unchanged_s,
        )


@dataclass(frozen=True)
class Look:
    """What one look at a regular file in the inbox saw."""

    size: int
    mtime_ns: int
    declared_size: int | None  # what its BMP header declares, if it says

    def verdict(
        self,
        *,
        settle_s: float,
        timeout_s: float,
        finished: tuple[int, int] | None,
        unchanged_s: float = 0.0,
    ) -> Verdict:
        """READY, SETTLING, INCOMPLETE or TIMED_OUT; `unchanged_s` is how long this size and mtime
        have been seen (0 when this is the first look: its mtime alone then tells how idle it is)."""
        # Unchanged since its writer closed it; written again since, it waits for the next close.
        closed = finished == (self.size, self.mtime_ns)
        idle_s = max(time.time() - self.mtime_ns / 1e9, unchanged_s)
        if self.declared_size is not None:
            complete = self.size >= self.declared_size
        else:
            # Without a usable declared size (not a BMP, or a writer that leaves the field zero)
            # stability alone decides; a non-BMP then fails decoding with its reason.
            complete = self.size >= BMP_SIZE_FIELD.size
        if complete:
            # A closed BMP with every declared byte present needs no settling; without a declared
            # size only stability can tell.
            if closed and self.declared_size is not None:
                return Verdict.READY
            return Verdict.READY if idle_s >= settle_s else Verdict.SETTLING
        return Verdict.TIMED_OUT if idle_s >= timeout_s else Verdict.INCOMPLETE


def look(path: Path, *, before: _Observation | None = None) -> Look | Verdict:
    """A look at a file in the inbox: its size, time and declared size, or the verdict (GONE,
    UNREACHABLE, SPECIAL, INCOMPLETE when it cannot be examined) that needs no more. The header
    is read again only if the file changed since `before`."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return Verdict.GONE
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            # A folder on its way is a file now, or a link loop: no such frame can be there (and
            # waiting for one would keep the name, and the waiting count, forever).
            return Verdict.GONE
        if error.errno == errno.ENAMETOOLONG:
            # Written through a relative path (a writer that walked down with chdir): not
            # "still being written", and never will be readable by its name.
            return Verdict.UNREACHABLE
        logger.debug("cannot stat %s: %s", path, error)
        return Verdict.INCOMPLETE
    if not stat.S_ISREG(info.st_mode):
        return Verdict.SPECIAL
    if before is not None and (before.size, before.mtime_ns) == (info.st_size, info.st_mtime_ns):
        declared = before.declared_size
    else:
        declared = _declared_size_if_readable(path, info.st_size)
    return Look(size=info.st_size, mtime_ns=info.st_mtime_ns, declared_size=declared)


def _declared_size_if_readable(path: Path, size: int) -> int | None:
    return declared_bmp_size(path) if size >= BMP_SIZE_FIELD.size else None
