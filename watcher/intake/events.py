"""Filesystem events as wake-up hints: the folder stays the truth, rescans catch what events miss.

A frame closed by the program that wrote it is marked finished: the readiness check then need not
wait `settle_ms` to believe it is complete (the latency path). A frame renamed in (from outside
the inbox, or from a temporary name beside it) is hinted and settles as before.
The inbox and every folder under it are watched (watcher.intake.inotify), hidden folders left
out, so the hidden `.in-progress/` area never costs inotify watches. One
thread reads the events, everything queued at each read, and hands them over in one go.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from watcher.intake.discovery import is_candidate_name
from watcher.intake.inotify import IN_CLOSE_WRITE, IN_ISDIR, Event, Inotify
from watcher.wording import plural

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventBatch:
    hints: set[PurePosixPath] = field(default_factory=set)
    finished: set[PurePosixPath] = field(default_factory=set)
    rescan: bool = False


class InboxEvents:
    """Collects the inbox paths that events mention and wakes the loop."""

    def __init__(self, inbox: Path, wake: threading.Event) -> None:
        self._inbox = inbox
        self._wake = wake
        self._lock = threading.Lock()
        self._hints: set[PurePosixPath] = set()
        self._finished: set[PurePosixPath] = set()
        self._rescan_requested = False
        self._inotify: Inotify | None = None
        self._control_read, self._control_write = -1, -1  # a pipe to the reader: _STOP or _REWATCH
        self._reader: threading.Thread | None = None
        # Each watch's folder, as its path in the inbox: set anew by every walk of the whole tree
        # (a folder renamed keeps its watch, under its new name; one gone leaves no watch), added
        # to by a retry of the folders left unwatched.
        self._folders: dict[int, PurePosixPath] = {}
        self._inbox_identity: tuple[int, int] | None = None  # (device, inode) the walk watched
        # The folders the last walk could not watch (out of inotify watches, say): tried again at
        # each rescan, they alone, not the whole tree.
        self._unwatched: list[_Unwatched] = []
        # Why folders were left unwatched since a walk last watched them all; empty when it did.
        # Each reason is warned about once until every folder is watched again (a never-watchable
        # `lost+found` must not hide running out of watches, nor watches hovering at the limit
        # make news at every other rescan).
        self._unwatched_reasons: set[str] = set()

    def request_rescan(self) -> None:
        with self._lock:
            self._rescan_requested = True
        self._wake.set()

    def take(self) -> EventBatch:
        """The paths hinted since the last call, which of them writers finished, and whether a full
        rescan was asked for."""
        with self._lock:
            batch = EventBatch(hints=self._hints, finished=self._finished, rescan=self._rescan_requested)
            self._hints, self._finished, self._rescan_requested = set(), set(), False
        return batch

    def start(self) -> bool:
        """Watch the inbox and start reading its events; False when inotify cannot be used here
        (the daemon then polls instead)."""
        if self._reader is not None:
            raise RuntimeError("the inbox's events are read already")
        try:
            self._inotify = Inotify()
        except OSError as error:
            logger.warning("cannot watch %s for events (%s); polling it instead", self._inbox, error)
            return False
        self._watch_tree()
        self._control_read, self._control_write = os.pipe()
        self._reader = threading.Thread(
            target=self._read, args=(self._inotify,), name="inbox-events", daemon=True
        )
        self._reader.start()
        logger.debug("watching %s for events", self._inbox)
        return True

    def check_inbox(self) -> None:
        """Have the inbox watched again if it is not the folder its watch is on (deleted and made
        again, renamed away and back, a share mounted over it, or missing when watching began),
        or if the last walk left folders unwatched (the inotify watches used up, by other
        programs say): their events would otherwise never come, their frames found only by
        rescans for the rest of the run. The daemon asks at each rescan."""
        if self._reader is None:
            return
        if self._unwatched or _identity(self._inbox) != self._inbox_identity:
            os.write(self._control_write, _REWATCH)

    def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            os.write(self._control_write, _STOP)
            reader.join(timeout=5)
            if reader.is_alive():
                # Its descriptors stay open: closed under it, their numbers could be reused.
                logger.warning("the inbox's event reader did not stop; leaving it")
                return
            for end in (self._control_read, self._control_write):
                os.close(end)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    def take_events(self, events: list[Event]) -> None:
        """Hints, finished marks and rescans from `events` (as one read returned them)."""
        assert self._inotify is not None, "started"
        overflowed = any(event.overflowed for event in events)
        tree_changed = any(_changes_the_tree(event) for event in events)
        if overflowed:
            logger.warning("the inbox's event queue overflowed: rescanning")
        if tree_changed or overflowed:
            # First: a folder renamed keeps its watch, and its files' events name it as it is now.
            # A folder made or moved in may arrive already full: a scan looks inside. One made
            # while the queue was full left no event: the walk finds it.
            self._watch_tree()
        hints, finished = set(), set()
        for event in events:
            folder = self._folders.get(event.watch)
            if folder is not None and not event.about_a_folder and is_candidate_name(event.name):
                relative = folder / event.name
                hints.add(relative)
                # Closed after writing (our own reads close without writing): its writer is done.
                if event.mask & IN_CLOSE_WRITE:
                    finished.add(relative)
        if not (hints or tree_changed or overflowed):
            return
        with self._lock:
            self._hints |= hints
            self._finished |= finished
            self._rescan_requested |= tree_changed or overflowed
        self._wake.set()

    def _read(self, inotify: Inotify) -> None:
        poller = select.poll()
        poller.register(inotify.descriptor, select.POLLIN)
        poller.register(self._control_read, select.POLLIN)
        while True:
            ready = {descriptor for descriptor, _ in poller.poll()}
            try:
                if self._control_read in ready:
                    asked = os.read(self._control_read, 64)
                    if _STOP in asked:
                        return
                    self._rewatch()
                if inotify.descriptor in ready:
                    self.take_events(inotify.read())
            except Exception:  # noqa: BLE001 - events are only hints: never stop reading them
                logger.exception("reading the inbox's events failed: rescanning")
                self.request_rescan()

    def _rewatch(self) -> None:
        """check_inbox's walk. A rescan follows only if it watches what was not watched before
        (frames may have come there unheard since the rescan that asked): a folder that still
        cannot be watched is tried again at the next rescan, not in a loop of rescans."""
        assert self._inotify is not None, "started"
        # The events queued already first (one read holds thousands): a folder moved since the
        # last walk, its event still unread, must not be tried again by its old path, nor through
        # a link put in its place.
        self.take_events(self._inotify.read())
        identity, watched = self._inbox_identity, set(self._folders.values())
        if _identity(self._inbox) != identity or any(left.folder == self._inbox for left in self._unwatched):
            self._watch_tree()
        else:
            self._watch_unwatched()
        if self._inbox_identity != identity or not watched.issuperset(self._folders.values()):
            self.request_rescan()

    def _watch_tree(self) -> None:
        """Watch the inbox and every folder under it but hidden ones (links not followed); drop
        the watches of folders no longer there."""
        assert self._inotify is not None, "started"
        self._inbox_identity = _identity(self._inbox)
        folders, unwatched = self._walk([(self._inbox, PurePosixPath())])
        for watch in self._folders.keys() - folders.keys():
            self._inotify.unwatch(watch)
        self._folders = folders
        self._keep_unwatched(unwatched)

    def _watch_unwatched(self) -> None:
        """The folders the last walk could not watch tried again, and what is under them: a
        folder that never can be (a `lost+found` the daemon's user may not enter, at the root of
        an inbox on its own filesystem) must not cost a walk of the whole tree at every rescan.
        The rest keep their watches; a folder moved or removed meanwhile made an event, and
        that event its own walk of the whole tree."""
        folders, unwatched = self._walk([(left.folder, left.relative) for left in self._unwatched])
        self._folders.update(folders)
        self._keep_unwatched(unwatched)

    def _walk(
        self, starts: list[tuple[Path, PurePosixPath]]
    ) -> tuple[dict[int, PurePosixPath], list[_Unwatched]]:
        """Watch each folder of `starts` and every folder under it but hidden ones (links not
        followed): each watch's folder as its path in the inbox, and the folders left unwatched."""
        assert self._inotify is not None, "started"
        folders: dict[int, PurePosixPath] = {}
        unwatched: list[_Unwatched] = []
        stack = list(starts)
        while stack:
            folder, relative = stack.pop()
            try:
                folders[self._inotify.watch(folder)] = relative
                entries = list(os.scandir(folder))
            except OSError as error:
                if isinstance(error, (FileNotFoundError, NotADirectoryError)) and folder != self._inbox:
                    continue  # a folder gone (or a file now) since its parent was listed
                reason = error.strerror or str(error)
                if error.errno == errno.ENOSPC:  # inotify's own word for "no watches left"
                    reason = "out of inotify watches: raise fs.inotify.max_user_watches"
                unwatched.append(_Unwatched(folder, relative, reason))
                continue
            for entry in entries:
                try:
                    if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), relative / entry.name))
                except OSError:
                    continue
        return folders, unwatched

    def _keep_unwatched(self, unwatched: list[_Unwatched]) -> None:
        """Keep the folders a walk left unwatched, for the next rescan to try again, and say why."""
        self._unwatched = unwatched
        because = {left.reason for left in unwatched}
        if unwatched:
            # News first.
            unwatched = sorted(unwatched, key=lambda left: left.reason in self._unwatched_reasons)
            # Out of inotify watches, or not allowed: the periodic rescan still finds their frames.
            # Said once for each reason until every folder is watched again, not at each folder
            # made or removed meanwhile (a camera's hourly folders).
            logger.log(
                logging.DEBUG if because <= self._unwatched_reasons else logging.WARNING,
                "cannot watch %s for events; relying on rescans: %s",
                plural(len(unwatched), "folder"),
                ", ".join(f"{left.folder} ({left.reason})" for left in unwatched[:3])
                + (", ..." if len(unwatched) > 3 else ""),
            )
        elif self._unwatched_reasons:
            logger.info("every folder of the inbox is watched for events again")
        self._unwatched_reasons = (self._unwatched_reasons | because) if unwatched else set()


class _Unwatched(NamedTuple):
    """A folder a walk could not watch: where it is, its path in the inbox, and why."""

    folder: Path
    relative: PurePosixPath
    reason: str


# What the reader's pipe carries: stop, or watch the tree again (check_inbox).
_STOP, _REWATCH = b"s", b"w"


def _changes_the_tree(event: Event) -> bool:
    """A folder made or moved in (not a hidden one: never scanned or watched), or a watched one
    moved, deleted or unmounted: the tree's watches are set again and a rescan looks."""
    return event.about_a_folder and not (event.mask & IN_ISDIR and event.name.startswith("."))


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        info = folder.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino
