"""From names in the inbox to claimed frames: the waiting set, readiness, and claiming.

Names come from event hints and rescans; each turn, every waiting frame the readiness tracker
calls ready is claimed (see watcher.intake.claiming) and handed on. A frame the filesystem will
not let go stays in the inbox, untouched, and is tried again at the next rescan.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from watcher.faults import kill_point
from watcher.intake.claiming import ClaimRefused, claim
from watcher.intake.discovery import scan_inbox
from watcher.intake.readiness import ReadinessTracker, Verdict
from watcher.pipeline.stages import Claimed

logger = logging.getLogger(__name__)


class Claims:
    def __init__(
        self, *, inbox: Path, area: Path, readiness: ReadinessTracker, stop: threading.Event
    ) -> None:
        self._inbox = inbox
        self._area = area
        self._readiness = readiness
        self._stop = stop
        self._waiting: dict[PurePosixPath, None] = {}  # insertion-ordered set: oldest first
        # Frames refused with the reason last logged: logged again only if it changes.
        self._refused: dict[PurePosixPath, str] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def left(self) -> list[str]:
        return [str(path) for path in self._waiting]

    def hint(self, names: Iterable[PurePosixPath]) -> None:
        self._waiting.update(dict.fromkeys(names))

    def writers_finished(self, names: set[PurePosixPath]) -> None:
        self._readiness.writers_finished(self._inbox, names)

    def rescan(self) -> None:
        self.hint(scan_inbox(self._inbox))

    def claim_ready(self, take: Callable[[Claimed], None]) -> int:
        """Claim every ready frame, handing each to `take`; returns how many are still settling."""
        settling = 0
        for relative in list(self._waiting):
            if self._stop.is_set():
                break
            verdict = self._readiness.assess(self._inbox, relative)
            if verdict == Verdict.INCOMPLETE:
                continue
            if verdict == Verdict.SETTLING:
                settling += 1
                continue
            del self._waiting[relative]
            self._readiness.forget(relative)
            frame = self._claim(relative, verdict)
            if frame is not None:
                kill_point("claimed")
                logger.debug("claimed %s as %s", relative, frame.key)
                take(frame)
        return settling

    def _claim(self, relative: PurePosixPath, verdict: Verdict) -> Claimed | None:
        if verdict == Verdict.GONE:
            return None
        if verdict == Verdict.UNREACHABLE:
            self._refuse(relative, "its path is longer than PATH_MAX: it cannot be opened")
            return None
        # A timed-out frame is claimed like any other: processing finds it short and fails it.
        try:
            return claim(self._inbox, self._area, relative)
        except ClaimRefused as error:
            self._refuse(relative, str(error))
            return None

    def _refuse(self, relative: PurePosixPath, reason: str) -> None:
        if self._refused.get(relative) != reason:
            logger.error("frame %s stays in the inbox: %s", self._inbox / relative, reason)
        self._refused[relative] = reason
