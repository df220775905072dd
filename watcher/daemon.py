"""The daemon's loop. It only coordinates: discovery, readiness, claiming, batching, processing.

Each turn: take event hints (and, now and then, a full rescan) into the set of waiting files,
claim the ones that are ready, and flush the batch when it is full or its oldest frame has waited
`batch.max_wait_ms`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from watcher.claiming import ClaimedFrame, claim, claimed_frames
from watcher.config import Config
from watcher.discovery import scan_inbox
from watcher.events import InboxEvents
from watcher.faults import kill_point
from watcher.head_reload import HeadReloader
from watcher.instance import InstanceLock, orphaned_instances
from watcher.processing import BatchProcessor, BatchReport, finish_committed_move
from watcher.readiness import ReadinessTracker, Verdict
from watcher.store import Result

logger = logging.getLogger(__name__)


@dataclass
class RunReport:
    ok: int = 0
    failed: int = 0
    batches: int = 0
    recovered: int = 0
    # Frames left in the inbox because they are still being written (for `--once`).
    left_incomplete: list[str] = field(default_factory=list)

    def add(self, batch: BatchReport) -> None:
        self.ok += batch.ok
        self.failed += batch.failed
        self.batches += 1


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        engine: Engine,
        processor: BatchProcessor,
        stop: threading.Event,
        instance: InstanceLock,
        reloader: HeadReloader | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._processor = processor
        self._stop = stop
        self._wake = threading.Event()
        self._reloader = reloader
        self.instance = instance
        self._reload_requested = threading.Event()
        self._readiness = ReadinessTracker(
            settle_s=config.inbox.settle_ms / 1000, timeout_s=config.inbox.readiness_timeout_s
        )
        self._waiting: dict[PurePosixPath, None] = {}  # insertion-ordered set: oldest first
        self._batch: list[ClaimedFrame] = []
        self._batch_opened = 0.0
        self.report = RunReport()
        # Turns of the loop so far; tests wait on it instead of sleeping.
        self.turns = 0

    def wake(self) -> None:
        self._wake.set()

    def request_reload(self) -> None:
        """Reload the head before the next batch (SIGHUP)."""
        self._reload_requested.set()
        self._wake.set()

    def _maybe_switch_head(self) -> None:
        # Called between batches only, so a batch never mixes two heads.
        if self._reloader is None:
            return
        force = self._reload_requested.is_set()
        self._reload_requested.clear()
        head = self._reloader.check(serving=self._processor.head, force=force)
        if head is not None:
            self._processor.head = head

    def run(self, *, once: bool = False) -> RunReport:
        inbox = self._config.paths.inbox
        events = None if once else InboxEvents(inbox, self._wake)
        try:
            self._recover()
            if events is not None:
                events.start()
            self._rescan()
            next_rescan = time.monotonic() + self._config.inbox.rescan_interval_s
            while not self._stop.is_set():
                if events is not None:
                    hints, rescan = events.take()
                    self._waiting.update(dict.fromkeys(hints))
                    if rescan or time.monotonic() >= next_rescan:
                        self._rescan()
                        self._adopt_orphans()
                        next_rescan = time.monotonic() + self._config.inbox.rescan_interval_s
                self._maybe_switch_head()
                settling = self._claim_ready()
                if self._batch and (self._batch_due() or (once and not settling)):
                    self._flush()
                self.turns += 1
                if once and not self._batch and not settling:
                    break
                self._wake.wait(timeout=self._wait_seconds())
                self._wake.clear()
            # Stopping: the batch in hand is finished and committed, nothing new is taken.
            if self._batch:
                self._flush()
        finally:
            if events is not None:
                events.stop()
            self.instance.release()
        self.report.left_incomplete = [str(path) for path in self._waiting]
        return self.report

    def _rescan(self) -> None:
        self._waiting.update(dict.fromkeys(scan_inbox(self._config.paths.inbox)))

    def _claim_ready(self) -> int:
        """Claim every ready frame into the batch (flushing full ones); returns how many are settling."""
        settling = 0
        inbox, area = self._config.paths.inbox, self.instance.area
        for relative in list(self._waiting):
            if self._stop.is_set():
                break
            assessment = self._readiness.assess(inbox, relative)
            verdict = assessment.verdict
            if verdict == Verdict.INCOMPLETE:
                continue
            if verdict == Verdict.SETTLING:
                settling += 1
                continue
            del self._waiting[relative]
            self._readiness.forget(relative)
            if verdict == Verdict.GONE:
                continue
            # A timed-out frame is claimed like any other: processing finds it short and fails it.
            frame = claim(inbox, area, relative)
            if frame is None:
                continue
            kill_point("claimed")
            logger.debug("claimed %s as %s", relative, frame.key)
            self._add_to_batch(frame)
        return settling

    def _add_to_batch(self, frame: ClaimedFrame) -> None:
        if not self._batch:
            self._batch_opened = time.monotonic()
        self._batch.append(frame)
        if len(self._batch) >= self._config.batch.size:
            self._flush()

    def _batch_due(self) -> bool:
        waited_ms = (time.monotonic() - self._batch_opened) * 1000
        return waited_ms >= self._config.batch.max_wait_ms

    def _wait_seconds(self) -> float:
        wait = self._config.inbox.poll_interval_ms / 1000
        if self._batch:
            remaining = self._config.batch.max_wait_ms / 1000 - (time.monotonic() - self._batch_opened)
            wait = min(wait, max(remaining, 0.0))
        return wait

    def _flush(self) -> None:
        frames, self._batch = self._batch, []
        self.report.add(self._processor.process(frames))

    def _recover(self) -> None:
        """Finish what earlier runs left in progress (ours, and dead instances') before new frames."""
        self._recover_area(self.instance.area)
        self._adopt_orphans()

    def _adopt_orphans(self) -> None:
        # An instance whose lock we can take is gone: its claimed frames are ours to finish.
        for orphan in orphaned_instances(self._config.in_progress, own=self.instance.name):
            try:
                if self._recover_area(orphan.area):
                    logger.info("recovered the frames of instance %s, which is gone", orphan.name)
                with contextlib.suppress(OSError):
                    orphan.area.rmdir()
            finally:
                orphan.release()

    def _recover_area(self, area: Path) -> int:
        leftovers = claimed_frames(area)
        if not leftovers:
            return 0
        keys = [frame.key for frame in leftovers]
        with Session(self._engine) as session:
            committed = {
                row.frame_key: row
                for row in session.scalars(select(Result).where(Result.frame_key.in_(keys)))
            }
        for frame in leftovers:
            row = committed.get(frame.key)
            if row is not None:
                finish_committed_move(frame, row, self._engine)
            else:
                self._add_to_batch(frame)
            self.report.recovered += 1
        if self._batch:
            self._flush()
        logger.info("recovered %d frames left in progress in %s", len(leftovers), area)
        return len(leftovers)
