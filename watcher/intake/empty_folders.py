"""Removing the inbox's folders that writers have left empty for good.

Exporters often write each hour or day into a folder of its own (`cam-07/2026-11-29/13/`). Once
its frames are claimed, such a folder stays empty for ever: over months, thousands of them, each
an inotify watch (kernel memory, and a limit shared with the host's other programs) and a listing
at every rescan. A rescan offers each empty folder it lists; one that has stayed empty for
`inbox.remove_empty_folders_after_s` both by its modification time (the last entry made or taken
out) and as this daemon's rescans saw it is removed. The second clock is the daemon's own: an
unmounted share's mount point (an empty folder with an old time) goes only once it has stayed
unmounted that long, not at the first rescan, and neither a file server's clock running behind
nor folders copied in with their old times make a folder just made look old. It starts again
with each start of the daemon (erring on the side of keeping).

Never the inbox itself nor a camera's own folder (the first level): a writer may well expect those
to exist. A folder deeper down that a writer comes back to after that long without making it
again would be gone under it, hence off by default. `rmdir` removes only an empty folder: a frame
written into it meanwhile keeps it (and is found by the next rescan); one that stays (a mount
point, say) is looked at again only after another limit's time. It starts from the folder's
parent opened below the inbox one level at a time (watcher.intake.source_folders): a folder on the
way swapped for a link since the scan listed it leads nowhere outside the inbox.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from watcher.intake.source_folders import SourceFolders
from watcher.wording import plural, shown

logger = logging.getLogger(__name__)

# How long one scan may spend on its empty folders. Months of them, found by the first rescan
# after the option is set (or by one after a long outage), would otherwise hold the loop for as
# long as the filesystem takes to remove them all: no frame claimed meanwhile, and the first scan
# comes before the service is ready (systemd's start timeout), a later one starves the watchdog.
# The rest are removed by the next rescans.
REMOVING_S = 0.5


class EmptyFolders:
    """Folders a rescan found empty, removed once they have been so for `after_s` seconds."""

    def __init__(
        self, *, after_s: float, removing_s: float = REMOVING_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._after_s = after_s
        self._removing_s = removing_s
        self._clock = clock  # the daemon's own, for how long its rescans have seen each one empty
        self._seen_empty: dict[PurePosixPath, float] = {}  # since when, by the last whole scan
        self._still_empty: dict[PurePosixPath, float] = {}  # the same, by this scan so far
        self._spent = 0.0  # on this scan's empty folders
        self._this_scan: list[PurePosixPath] = []  # removed by this scan
        self.removed = 0  # in this daemon's life, for tests

    def scan_starts(self) -> None:
        self._spent = 0.0
        self._this_scan = []
        self._still_empty = {}

    def scan_ended(self) -> None:
        """One line for all this scan removed: months of folders, one line each, would flood the
        journal (whose rate limit then drops the daemon's other lines too)."""
        self._seen_empty = self._still_empty  # one not listed empty this time starts again
        if self._this_scan:
            first, more = shown(str(self._this_scan[0])), len(self._this_scan) - 1
            also = f" and {plural(more, 'other')}" if more else ""
            logger.info("removed %s%s: empty for over %.0f s", first, also, self._after_s)

    def offer(self, inbox: Path, relative: PurePosixPath) -> None:
        """The folder at `relative` in `inbox` was listed empty just now."""
        if len(relative.parts) < 2:
            return  # the inbox, or a camera's own folder
        now = self._clock()
        seen_since = self._still_empty[relative] = self._seen_empty.get(relative, now)
        if now - seen_since < self._after_s:
            return  # not yet seen empty that long by this daemon
        if self._spent > self._removing_s:
            return  # this scan's time for them is up: the next rescan goes on
        started = time.monotonic()
        try:
            # Its parent opened level by level, never through a link: a folder swapped for one
            # since the scan listed it must not lead the rmdir out of the inbox.
            with SourceFolders(inbox) as folders:
                parent, name = folders.source(relative)
                empty_for = time.time() - os.stat(name, dir_fd=parent, follow_symlinks=False).st_mtime
                if empty_for < self._after_s:
                    # Looked at again once its time says so, not at each scan: folders that
                    # stay would spend every scan's time first, and the ones after them never go.
                    self._still_empty[relative] = now - max(empty_for, 0.0)
                    return
                os.rmdir(name, dir_fd=parent)
        except OSError as error:
            # Written into since it was listed (ENOTEMPTY), gone, a mount point (EBUSY), a link
            # on its way, or not ours to remove: it stays, as it would have without this, and
            # is tried again after another limit's time (as above).
            self._still_empty[relative] = now
            logger.debug("empty folder %s stays: %s", relative, error)
            return
        finally:
            self._spent += time.monotonic() - started
        self.removed += 1
        del self._still_empty[relative]
        self._this_scan.append(relative)
        logger.debug("removed %s: empty for over %.0f s", relative, self._after_s)
