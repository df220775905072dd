"""Filesystem events as wake-up hints: the folder stays the truth, rescans catch what events miss."""

from __future__ import annotations

import logging
import threading
from pathlib import Path, PurePosixPath

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from watcher.discovery import relative_to_inbox

logger = logging.getLogger(__name__)


class InboxEvents(FileSystemEventHandler):
    """Collects the inbox paths that events mention and wakes the loop."""

    def __init__(self, inbox: Path, wake: threading.Event) -> None:
        self._inbox = inbox
        self._wake = wake
        self._lock = threading.Lock()
        self._hints: set[PurePosixPath] = set()
        self._rescan_requested = False
        self._observer: Observer | None = None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory and event.event_type in ("created", "moved"):
            # A new camera folder may arrive already full (moved in); let a scan look inside.
            self.request_rescan()
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            relative = relative_to_inbox(self._inbox, Path(str(raw)))
            if relative is not None:
                with self._lock:
                    self._hints.add(relative)
                self._wake.set()

    def request_rescan(self) -> None:
        with self._lock:
            self._rescan_requested = True
        self._wake.set()

    def take(self) -> tuple[set[PurePosixPath], bool]:
        """The paths hinted since the last call, and whether a full rescan was asked for."""
        with self._lock:
            hints, self._hints = self._hints, set()
            rescan, self._rescan_requested = self._rescan_requested, False
        return hints, rescan

    def start(self) -> None:
        observer = Observer()
        observer.schedule(self, str(self._inbox), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        logger.debug("watching %s for events", self._inbox)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
