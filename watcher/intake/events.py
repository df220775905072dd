"""Filesystem events as wake-up hints: the folder stays the truth, rescans catch what events miss.

A frame closed by the program that wrote it is marked finished: the readiness check then need not
wait `settle_ms` to believe it is complete (the latency path). A rename from outside the watched
tree arrives as a plain "created" and settles as before.
The inbox is watched without recursion and each camera folder recursively, so the hidden
in-progress area (one folder per claimed frame) never costs inotify watches.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from watcher.intake.discovery import relative_to_inbox

logger = logging.getLogger(__name__)

# The events that say something: a frame made or moved in (and a camera folder), and a writer
# closing what it wrote. Only these are asked of inotify. The rest (opened, closed unwritten,
# modified, deleted, a folder's "modified") came mostly from the daemon's own work, several for
# every frame it looked at and claimed, each through watchdog's Python and a hint the loop then
# looked at again (bench/daemon_cpu.py --live: the live daemon's own CPU 191 → 130 µs a frame).
# A file still being written is looked at again every inbox.poll_interval_ms without them; one
# deleted from the inbox is found gone when looked at; a frame whose claim was refused (an
# immutable file, say) is tried again at the next rescan, not when its attributes change. A
# claim (a rename out of its camera folder) is still reported, as inotify reports both halves of
# a rename or neither: watchdog makes it a "deleted" and drops it.
WANTED_EVENTS = (FileCreatedEvent, FileMovedEvent, FileClosedEvent, DirCreatedEvent, DirMovedEvent)


@dataclass(frozen=True)
class EventBatch:
    hints: set[PurePosixPath] = field(default_factory=set)
    finished: set[PurePosixPath] = field(default_factory=set)
    rescan: bool = False


class _OverflowListener(logging.Handler):
    """watchdog only logs a kernel event-queue overflow; turn that line into a full rescan."""

    def __init__(self, events: InboxEvents) -> None:
        super().__init__(level=logging.WARNING)
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._events.request_rescan()


class InboxEvents(FileSystemEventHandler):
    """Collects the inbox paths that events mention and wakes the loop."""

    def __init__(self, inbox: Path, wake: threading.Event) -> None:
        self._inbox = inbox
        self._wake = wake
        self._lock = threading.Lock()
        self._hints: set[PurePosixPath] = set()
        self._finished: set[PurePosixPath] = set()
        self._rescan_requested = False
        self._observer: BaseObserver | None = None
        self._camera_watches: dict[Path, ObservedWatch] = {}
        self._overflow = _OverflowListener(self)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                destination = Path(str(getattr(event, "dest_path", "") or event.src_path))
                if destination.parent == self._inbox:
                    self._watch_camera_folder(destination)
                # A new camera folder may arrive already full (moved in); let a scan look inside.
                self.request_rescan()
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            relative = relative_to_inbox(self._inbox, Path(str(raw)))
            if relative is None:
                continue
            # Closed after writing (our own header reads close without writing): the writer is
            # done with it.
            finished = event.event_type == EVENT_TYPE_CLOSED
            with self._lock:
                self._hints.add(relative)
                if finished:
                    self._finished.add(relative)
            self._wake.set()

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

    def start(self) -> None:
        # watchdog holds each rename out of a folder (IN_MOVED_FROM) for half a second to pair it
        # with a rename in, and every event behind it waits too: each claim held back the next
        # frames' "closed after writing" by up to 0.5 s under a steady stream, past the latency
        # budget. The daemon needs only a rename's new name, which an unpaired rename in gives
        # as "created". (A class attribute: this process watches nothing else with watchdog.)
        InotifyMoveEventGrouper.delay = 0
        self._overflow = _OverflowListener(self)
        for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
            logging.getLogger(name).addHandler(self._overflow)
        observer = Observer()
        observer.daemon = True
        observer.schedule(self, str(self._inbox), recursive=False, event_filter=list(WANTED_EVENTS))
        observer.start()
        self._observer = observer
        for child in self._inbox.iterdir():
            if child.is_dir() and not child.is_symlink():
                self._watch_camera_folder(child)
        logger.debug("watching %s for events", self._inbox)

    def _watch_camera_folder(self, folder: Path) -> None:
        if self._observer is None or folder.name.startswith("."):
            return
        stale = self._camera_watches.pop(folder, None)
        if stale is not None:
            # The folder was removed and made again: its old watch is dead.
            try:
                self._observer.unschedule(stale)
            except (KeyError, OSError):
                pass
        try:
            self._camera_watches[folder] = self._observer.schedule(
                self, str(folder), recursive=True, event_filter=list(WANTED_EVENTS)
            )
        except OSError as error:
            # Gone again, or out of inotify watches: the periodic rescan still finds its frames.
            logger.warning("cannot watch %s for events (%s); relying on rescans", folder, error)

    def stop(self) -> None:
        for name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
            logging.getLogger(name).removeHandler(self._overflow)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
