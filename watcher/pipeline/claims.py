"""From names in the inbox to claimed frames: the waiting set, readiness, and claiming.

Names come from event hints and rescans; each turn, every waiting frame the readiness tracker
calls ready is claimed (see watcher.intake.claiming) and handed on. A frame the filesystem will
not let go stays in the inbox, untouched, and is tried again at the next rescan.

With file worker processes (see watcher.pipeline.file_workers) the waiting names go to them in
bulk: each worker looks at its share and claims what a look shows ready (complete and idle for
settle_ms, or closed by its writer); what a first look cannot call ready comes back to the
readiness tracker here, which remembers earlier looks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from watcher.faults import kill_point
from watcher.intake.claiming import ClaimRefused, claim
from watcher.intake.discovery import UnlistedFolders, scan_inbox
from watcher.intake.empty_folders import EmptyFolders
from watcher.intake.readiness import ReadinessTracker, Verdict
from watcher.pipeline.file_work import ClaimOutcome
from watcher.pipeline.stages import Claimed

# Claims names in bulk on the file workers: (name, its writer's close mark) → outcomes, in order.
BulkClaimer = Callable[[list[tuple[PurePosixPath, tuple[int, int] | None]]], list[ClaimOutcome]]
# Names handed to the workers at once: the first batches start while the rest are looked at, and
# a stop waits for at most this many claimed frames.
BULK_NAMES = 256

logger = logging.getLogger(__name__)


class Claims:
    def __init__(
        self,
        *,
        inbox: Path,
        area: Path,
        readiness: ReadinessTracker,
        stop: threading.Event,
        bulk: BulkClaimer | None = None,
        remove_empty_after_s: float = 0.0,
    ) -> None:
        self._inbox = inbox
        self._area = area
        self._readiness = readiness
        self._stop = stop
        self._bulk = bulk
        self._waiting: dict[PurePosixPath, None] = {}  # insertion-ordered set: oldest first
        # Frames refused with the reason last logged: logged again only if it changes.
        self._refused: dict[PurePosixPath, str] = {}
        self._unlisted = UnlistedFolders()  # folders a rescan cannot list, said once each
        # Folders below a camera's own left empty this long are removed; 0: never.
        self._empty = EmptyFolders(after_s=remove_empty_after_s) if remove_empty_after_s > 0 else None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def left(self, *, scan: bool = True) -> list[str]:
        """The frames in the inbox now, from a scan of it (at a stop: left for the next run), except
        those refused (named with their reason already). The waiting set holds only names seen:
        not those written since the last scan, in poll mode or when events were lost. Without
        `scan` (the inbox under another mount point than at start, unscanned as the loop leaves
        it: its names would be another disk's), the names seen."""
        names = scan_inbox(self._inbox, unlisted=self._unlisted) if scan else list(self._waiting)
        return [str(path) for path in names if path not in self._refused]

    def hint(self, names: Iterable[PurePosixPath]) -> None:
        self._waiting.update(dict.fromkeys(names))

    def writers_finished(self, names: set[PurePosixPath]) -> None:
        self._readiness.writers_finished(self._inbox, names)

    def rescan(self) -> None:
        self.hint(scan_inbox(self._inbox, unlisted=self._unlisted, empty=self._empty))
        if self._refused:
            # Refused names are remembered to say each refusal once. A refused name leaves the
            # waiting set, and the scan puts it back while it is still in the inbox: one not
            # back (cleared away, or claimed since) is forgotten, or a long refusal (a read-only
            # inbox) would keep every name it ever saw.
            self._refused = {name: reason for name, reason in self._refused.items() if name in self._waiting}

    def claim_ready(
        self, take: Callable[[Claimed], None], *, held_back: Callable[[], bool] = lambda: False
    ) -> int:
        """Claim every ready frame, handing each to `take`, until a stop or `held_back()` (the
        store refused a batch: nothing new is taken); returns how many are still settling."""
        if self._bulk is not None:
            settling = self._claim_in_bulk(self._bulk, take, held_back)
        else:
            settling = self._claim_one_by_one(take, held_back)
        self._readiness.say_unlooked(self._inbox)
        return settling

    def _claim_one_by_one(self, take: Callable[[Claimed], None], held_back: Callable[[], bool]) -> int:
        settling = 0
        for relative in list(self._waiting):
            if self._stop.is_set() or held_back():
                break
            verdict = self._readiness.assess(self._inbox, relative)
            if verdict == Verdict.INCOMPLETE:
                continue
            if verdict == Verdict.SETTLING:
                settling += 1
                continue
            del self._waiting[relative]
            self._readiness.forget(relative)
            # Its folder opened for this claim alone: `take` can wait minutes for a batch to
            # finish, and a folder held open that long could be moved away and made again.
            frame = self._claim(relative, verdict)
            if frame is not None:
                kill_point("claimed")
                logger.debug("claimed %s as %s", relative, frame.key)
                take(frame)
        return settling

    def _claim_in_bulk(
        self, bulk: BulkClaimer, take: Callable[[Claimed], None], held_back: Callable[[], bool]
    ) -> int:
        settling = 0
        names = list(self._waiting)
        for start in range(0, len(names), BULK_NAMES):
            if self._stop.is_set() or held_back():
                break
            chunk = names[start : start + BULK_NAMES]
            for outcome in bulk([(relative, self._readiness.finished_mark(relative)) for relative in chunk]):
                verdict = self._verdict(outcome)
                frame = self._taken_from(outcome, verdict)
                if frame is not None:
                    logger.debug("claimed %s as %s", outcome.relative, frame.key)
                    take(frame)
                elif verdict == Verdict.SETTLING:
                    settling += 1
        return settling

    def _taken_from(self, outcome: ClaimOutcome, verdict: Verdict | None) -> Claimed | None:
        """The claimed frame of an outcome (claimed here if only the tracker's memory says it is
        ready); None, and the name dropped or left waiting, otherwise."""
        relative = outcome.relative
        if outcome.frame is None and outcome.refused is None and verdict not in _TAKEN_HERE:
            return None  # still waiting: incomplete, or settling
        del self._waiting[relative]
        self._readiness.forget(relative)
        if outcome.refused is not None:
            self._refuse(relative, outcome.refused)
            return None
        if outcome.frame is not None:
            return outcome.frame
        assert verdict is not None, "in _TAKEN_HERE"
        frame = self._claim(relative, verdict)
        if frame is not None:
            kill_point("claimed")
        return frame

    def _verdict(self, outcome: ClaimOutcome) -> Verdict | None:
        if outcome.looked is not None:
            return self._readiness.judge(outcome.relative, outcome.looked)
        if outcome.verdict == Verdict.INCOMPLETE:  # no look: its lstat failed in the worker
            self._readiness.not_looked_at(outcome.relative)
        return outcome.verdict

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


# Verdicts on which a name leaves the waiting set here: claimed by this process (ready by the
# tracker's memory, or given up as timed out), or dropped (gone, unreachable).
_TAKEN_HERE = {Verdict.READY, Verdict.TIMED_OUT, Verdict.GONE, Verdict.UNREACHABLE}
