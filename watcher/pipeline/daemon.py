"""The daemon's loop. It only coordinates: discovery, readiness, claiming, batching, processing.

Each turn: take event hints (and, now and then, a full rescan) into the set of waiting files,
claim the ones that are ready, and flush the batch when it is full or its oldest frame has waited
`batch.max_wait_ms`.

A flushed batch is processed on a worker thread while the loop claims the next one, whose frames
are read and decoded as they are claimed: the model never waits for file handling. How many
batches are in flight at once is the processor's `lanes` (one on a GPU; one per CPU thread, each
with one thread, on a CPU; see watcher.pipeline.lanes). A batch flushed before it is full runs alone with
every thread. Each batch's outcome (a report, or a storage error that parks it) is taken back here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_any
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from watcher.config import Config
from watcher.faults import kill_point
from watcher.intake import suspects
from watcher.intake.claiming import ClaimedFrame, ClaimRefused, claim, claimed_frames
from watcher.intake.discovery import scan_inbox
from watcher.intake.events import EventBatch, InboxEvents
from watcher.intake.mounts import filesystem_type, needs_polling
from watcher.intake.readiness import ReadinessTracker, Verdict
from watcher.pipeline.backoff import MAX_RETRY_DELAY_S, is_transient
from watcher.pipeline.head_reload import HeadReloader
from watcher.pipeline.processing import BatchProcessor
from watcher.reports import BatchReport
from watcher.service.heartbeat import Heartbeat, Progress
from watcher.service.instance import InstanceLock, orphaned_instances
from watcher.service.telemetry import Telemetry
from watcher.store.schema import Result

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _InFlight:
    frames: list[ClaimedFrame]
    outcome: Future[BatchReport]
    since: float  # time.monotonic() when it was handed to a worker


@dataclass
class RunReport:
    ok: int = 0
    failed: int = 0
    batches: int = 0
    recovered: int = 0
    # Frames left in the inbox because they are still being written (for `--once`).
    left_incomplete: list[str] = field(default_factory=list)
    # Frames left claimed because their batch could not be stored; the next run recovers them.
    left_parked: int = 0

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
        telemetry: Telemetry | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._processor = processor
        self._stop = stop
        self._wake = threading.Event()
        self._reloader = reloader
        self.instance = instance
        self._telemetry = telemetry or Telemetry(
            instance=instance.name, data=config.paths.data, model_version=processor.head.version
        )
        self._heartbeat = Heartbeat(engine, instance=instance.name)
        self._reload_requested = threading.Event()
        self._readiness = ReadinessTracker(
            settle_s=config.inbox.settle_ms / 1000, timeout_s=config.inbox.readiness_timeout_s
        )
        self._waiting: dict[PurePosixPath, None] = {}  # insertion-ordered set: oldest first
        self._batch: list[ClaimedFrame] = []
        self._lanes = processor.lanes
        self._runner = ThreadPoolExecutor(max_workers=self._lanes.count, thread_name_prefix="batch")
        self._in_flight: list[_InFlight] = []
        # Frames whose batch could not be stored (database locked, disk full), waiting for a retry.
        self._parked: list[ClaimedFrame] = []
        self._retry_at = 0.0
        self._retry_delay = 0.0
        self._missing_folders = False
        # Frames the filesystem will not let go (a camera folder the daemon may not write), with
        # the reason last logged: tried again at each rescan, logged again only if it changes.
        self._refused: dict[PurePosixPath, str] = {}
        self._batch_opened = 0.0
        self.report = RunReport()
        # Turns of the loop so far; tests wait on it instead of sleeping.
        self.turns = 0

    @property
    def parked_frames(self) -> int:
        """Frames claimed whose batch waits for the database (or disk) to come back."""
        return len(self._parked)

    @property
    def in_flight_seconds(self) -> float | None:
        """How long the oldest batch on a worker has been running; None when there is none."""
        if not self._in_flight:
            return None
        return time.monotonic() - min(batch.since for batch in self._in_flight)

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
        events = None if once else self._events_for_mode()
        settings = self._config.inbox
        rescan_every = settings.rescan_interval_s if events is not None else settings.poll_scan_s
        try:
            # Frames left by a run that crashed are suspects (see watcher.intake.suspects).
            stopped_cleanly = suspects.take_clean_stop(self.instance.area)
            self._heartbeat.record_start(stopped_cleanly=stopped_cleanly)
            self._recover(crashed=not stopped_cleanly)
            if events is not None:
                events.start()
            self._rescan()
            # Migrated, model loaded, earlier work recovered: only now is the service ready.
            self._telemetry.ready(waiting=len(self._waiting))
            next_rescan = time.monotonic() + rescan_every
            while not self._stop.is_set():
                if not once:
                    taken = events.take() if events is not None else EventBatch()
                    self._waiting.update(dict.fromkeys(taken.hints))
                    self._readiness.writers_finished(self._config.paths.inbox, taken.finished)
                    if taken.rescan or time.monotonic() >= next_rescan:
                        self._rescan()
                        self._adopt_orphans()
                        next_rescan = time.monotonic() + rescan_every
                self.turns += 1
                self._telemetry.turn(waiting=len(self._waiting), busy_s=self.in_flight_seconds)
                self._heartbeat.beat(self._progress())
                if not self._folders_available():
                    if once:
                        break
                    self._wake.wait(timeout=rescan_every)
                    continue
                self._collect(wait=False)
                self._maybe_switch_head()
                self._retry_parked()
                settling = 0 if self._parked else self._claim_ready()
                if self._batch and (self._batch_due() or (once and not settling)):
                    self._flush()
                if once and not self._batch and not settling and not self._in_flight:
                    break
                self._wake.wait(timeout=self._wait_seconds())
                self._wake.clear()
            # Stopping: the batch in hand is finished and committed, nothing new is taken.
            self._telemetry.stopping()
            if self._batch:
                self._flush()
            self._collect(wait=True)
            self._heartbeat.beat(self._progress(), state="stopped", force=True)
            suspects.mark_clean_stop(self.instance.area)
        finally:
            if events is not None:
                events.stop()
            # Whatever happened, the batch in flight ends before the lock goes: another instance
            # must never adopt frames this one is still moving.
            self._runner.shutdown(wait=True)
            self._processor.close()
            self.instance.release()
        self.report.left_incomplete = [str(path) for path in self._waiting]
        self.report.left_parked = len(self._parked)
        return self.report

    def _progress(self) -> Progress:
        return Progress(
            claimed=len(self._batch) + len(self._parked) + len(self._in_flight_frames()),
            frames_ok=self.report.ok,
            frames_failed=self.report.failed,
            frames_per_s=self._telemetry.status.frames_per_s,
            model_version=self._processor.head.version,
        )

    def _events_for_mode(self) -> InboxEvents | None:
        inbox = self._config.paths.inbox
        mode = self._config.inbox.mode
        if mode == "auto":
            fstype = filesystem_type(inbox)
            mode = "poll" if needs_polling(fstype) else "events"
            logger.info("inbox %s is on %s: %s", inbox, fstype or "an unknown filesystem", mode)
        if mode == "poll":
            logger.info("polling %s every %.1f s", inbox, self._config.inbox.poll_scan_s)
            return None
        return InboxEvents(inbox, self._wake)

    def _folders_available(self) -> bool:
        """False while the inbox or an output folder is missing (an unmounted share, say)."""
        paths = self._config.paths
        missing = [folder for folder in (paths.inbox, paths.processed, paths.failed) if not folder.is_dir()]
        if missing and not self._missing_folders:
            # Never recreate them: under an empty mount point they would land on the wrong disk.
            logger.warning("%s missing (unmounted?): waiting for it to return", ", ".join(map(str, missing)))
        elif not missing and self._missing_folders:
            logger.info("folders are back: resuming")
            self._wake.set()
        self._missing_folders = bool(missing)
        return not missing

    def _rescan(self) -> None:
        self._waiting.update(dict.fromkeys(scan_inbox(self._config.paths.inbox)))

    def _claim_ready(self) -> int:
        """Claim every ready frame into the batch (flushing full ones); returns how many are settling."""
        settling = 0
        inbox, area = self._config.paths.inbox, self.instance.area
        for relative in list(self._waiting):
            if self._stop.is_set():
                break
            verdict = self._readiness.assess(inbox, relative)
            if verdict == Verdict.INCOMPLETE:
                continue
            if verdict == Verdict.SETTLING:
                settling += 1
                continue
            del self._waiting[relative]
            self._readiness.forget(relative)
            if verdict == Verdict.GONE:
                continue
            if verdict == Verdict.UNREACHABLE:
                self._refuse(relative, "its path is longer than PATH_MAX: it cannot be opened")
                continue
            # A timed-out frame is claimed like any other: processing finds it short and fails it.
            try:
                frame = claim(inbox, area, relative)
            except ClaimRefused as error:
                self._refuse(relative, str(error))
                continue
            if frame is None:
                continue
            kill_point("claimed")
            # A long backlog is claimed within one turn: the watchdog is fed as it goes.
            self._telemetry.alive(busy_s=self.in_flight_seconds)
            logger.debug("claimed %s as %s", relative, frame.key)
            self._add_to_batch(frame)
        return settling

    def _refuse(self, relative: PurePosixPath, reason: str) -> None:
        # It stays in the inbox, untouched; the next rescan tries again (the operator may fix it).
        if self._refused.get(relative) != reason:
            logger.error("frame %s stays in the inbox: %s", self._config.paths.inbox / relative, reason)
        self._refused[relative] = reason

    def _add_to_batch(self, frame: ClaimedFrame) -> None:
        if not self._batch:
            self._batch_opened = time.monotonic()
        self._batch.append(frame)
        self._processor.prefetch(frame)
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
        """Hand the batch to a worker once there is room for it (see watcher.pipeline.lanes)."""
        frames, self._batch = self._batch, []
        self._submit(frames)

    def _submit(self, frames: list[ClaimedFrame], *, refused: dict[str, str] | None = None) -> None:
        lanes = self._lanes
        # A full batch on a CPU shares the cores with the batches beside it, one thread each; a
        # partial one (a quiet inbox) is about latency and runs alone on every thread.
        alone = lanes.concurrent and len(frames) < self._config.batch.size
        if alone:
            self._collect(wait=True)
        else:
            self._wait_for_room(lanes.count)
        threads = lanes.all_threads if alone else lanes.threads_each
        future = self._runner.submit(self._processor.process, frames, cpu_threads=threads, refused=refused)
        future.add_done_callback(lambda _: self._wake.set())
        self._in_flight.append(_InFlight(frames, future, since=time.monotonic()))
        if threads == lanes.all_threads and not self._processor.model_on_accelerator:
            # On the CPU a pass on every thread needs every core to itself: one busy core elsewhere
            # (decoding the next batch) made a 2-thread forward pass 5 times slower here. So the
            # next batch's file work waits for this one, and then has every core.
            self._collect(wait=True)

    def _wait_for_room(self, lanes: int) -> None:
        """Take back finished batches until fewer than `lanes` are in flight."""
        self._collect(wait=False)
        while len(self._in_flight) >= lanes:
            wait_for_any([batch.outcome for batch in self._in_flight], return_when=FIRST_COMPLETED)
            self._collect(wait=False)

    def _collect(self, *, wait: bool) -> None:
        """Take back the outcomes of the batches in flight: those done, or all of them (waiting)."""
        for batch in list(self._in_flight):
            if wait or batch.outcome.done():
                self._take_back(batch)

    def _take_back(self, batch: _InFlight) -> None:
        try:
            report = batch.outcome.result()  # in flight (and so counted by in_flight_seconds) until done
        except (DBAPIError, OSError) as error:
            self._in_flight.remove(batch)
            if not is_transient(error):
                raise
            # Locked by another process, out of space, or the database server restarting: nothing
            # of this batch that was not committed is lost; keep the frames claimed and retry,
            # taking nothing new meanwhile.
            self._park(batch.frames, error)
            return
        self._in_flight.remove(batch)
        self._telemetry.alive(busy_s=None)  # a batch finished: the pipeline moves
        self._retry_delay = 0.0
        self.report.add(report)
        self._telemetry.batch_done(report)

    def _park(self, frames: list[ClaimedFrame], error: BaseException) -> None:
        self._parked.extend(frames)
        self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY_S) if self._retry_delay else 1.0
        self._retry_at = time.monotonic() + self._retry_delay
        logger.error(
            "cannot store a batch of %d frames (%s); retrying in %.0f s",
            len(frames),
            _first_line(error),
            self._retry_delay,
        )

    def _retry_parked(self) -> None:
        if not self._parked or time.monotonic() < self._retry_at:
            return
        frames, self._parked = self._parked, []
        logger.info("retrying %d parked frames", len(frames))
        try:
            self._finish_or_process(frames)
        except (DBAPIError, OSError) as error:
            if not is_transient(error):
                raise
            handed_on = {frame.key for frame in [*self._parked, *self._batch, *self._in_flight_frames()]}
            self._park([frame for frame in frames if frame.key not in handed_on], error)

    def _in_flight_frames(self) -> list[ClaimedFrame]:
        return [frame for batch in self._in_flight for frame in batch.frames]

    def _recover(self, *, crashed: bool) -> None:
        """Finish what earlier runs left in progress (ours, and dead instances') before new frames."""
        self._recover_area(self.instance.area, crashed=crashed)
        self._adopt_orphans()
        self._collect(wait=True)  # recovered, committed and moved before READY

    def _adopt_orphans(self) -> None:
        # An instance whose lock we can take is gone: its claimed frames are ours to finish.
        for orphan in orphaned_instances(self._config.in_progress, own=self.instance.name):
            try:
                crashed = not suspects.stopped_cleanly(orphan.area)
                if self._recover_area(orphan.area, crashed=crashed):
                    logger.info("recovered the frames of instance %s, which is gone", orphan.name)
                suspects.take_clean_stop(orphan.area)
                with contextlib.suppress(OSError):
                    orphan.area.rmdir()
            except DBAPIError as error:
                if not is_transient(error):
                    raise
                # The database is away: the next rescan tries again; the frames stay where they are.
                logger.warning("cannot adopt instance %s's frames yet: %s", orphan.name, _first_line(error))
                return
            finally:
                orphan.release()

    def _recover_area(self, area: Path, *, crashed: bool) -> int:
        leftovers = claimed_frames(area)
        if leftovers:
            logger.info(
                "recovering %d frames left in progress in %s%s",
                len(leftovers),
                area,
                " by a run that crashed: each is processed alone" if crashed else "",
            )
            self._finish_or_process(leftovers, crashed=crashed)
            self.report.recovered += len(leftovers)
        return len(leftovers)

    def _finish_or_process(self, frames: list[ClaimedFrame], *, crashed: bool = False) -> None:
        """Frames whose row is committed only need their move; the others are processed again,
        each alone when a crash left them (one of them may be what crashed the daemon)."""
        keys = [frame.key for frame in frames]
        with Session(self._engine) as session:
            committed = {
                row.frame_key: row
                for row in session.scalars(select(Result).where(Result.frame_key.in_(keys)))
            }
        for frame in frames:
            row = committed.get(frame.key)
            if row is not None:
                self._processor.finish_committed_move(frame, row)
            elif crashed:
                self._process_suspect(frame)
            else:
                self._add_to_batch(frame)
        if self._batch:
            self._flush()

    def _process_suspect(self, frame: ClaimedFrame) -> None:
        crashes = suspects.crashes_survived(frame)
        if crashes >= suspects.MAX_CRASHES:
            logger.error(
                "frame %s was in progress during %d crashes: failing it unopened", frame.relative, crashes
            )
            self._submit([frame], refused={frame.key: suspects.crash_reason()})
        else:
            try:
                suspects.record_attempt(frame, crashes + 1)
            except OSError as error:
                logger.warning("cannot count the attempts of %s: %s", frame.relative, error.strerror)
            self._submit([frame])
        self._collect(wait=True)
        self._telemetry.alive(busy_s=None)
        self._heartbeat.beat(self._progress())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
