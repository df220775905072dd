"""The daemon's loop. It only coordinates: find, claim, enqueue, and take back what finished.

Each turn: take event hints (and, now and then, a full rescan) into the waiting set, claim the
frames that are ready into the batch (watcher.pipeline.claims), and flush the batch when it is
full or its oldest frame has waited `batch.max_wait_ms` (watcher.pipeline.dispatch). Recovery
(watcher.pipeline.recovery) runs before the first turn and adopts dead instances' frames at
rescans; parked batches are retried when their backoff is due.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial

from sqlalchemy import Engine

from watcher.config import Config
from watcher.errors import raise_if_stopped
from watcher.intake import suspects
from watcher.intake.events import EventBatch, InboxEvents
from watcher.intake.mounts import filesystem_type, needs_polling
from watcher.intake.readiness import ReadinessTracker
from watcher.intake.site_mounts import SiteMounts, SiteWatch
from watcher.pipeline.backoff import is_transient
from watcher.pipeline.claims import Claims
from watcher.pipeline.dispatch import Dispatcher
from watcher.pipeline.file_workers import FileWorkers
from watcher.pipeline.head_reload import HeadReloader
from watcher.pipeline.processing import BatchProcessor
from watcher.pipeline.recovery import Recovery
from watcher.pipeline.stages import Claimed
from watcher.reports import BatchReport, RunReport
from watcher.service.heartbeat import Heartbeat, Progress
from watcher.service.instance import InstanceLock
from watcher.service.telemetry import Telemetry
from watcher.store.errors import StorageError

logger = logging.getLogger(__name__)


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
        mounts: SiteMounts | None = None,
    ) -> None:
        self._config = config
        self._engine = engine
        self._processor = processor
        self._stop = stop
        self._wake = threading.Event()
        self._reloader = reloader
        self._reload_requested = threading.Event()
        self.instance = instance
        self._telemetry = telemetry or Telemetry(
            instance=instance.name, data=config.paths.data, model_version=processor.head.version
        )
        self._heartbeat = Heartbeat(engine, instance=instance.name)
        self._claims = _claims_for(config, instance=instance, workers=processor.file_workers, stop=stop)
        self._dispatcher = Dispatcher(
            processor,
            batch_size=config.batch.size,
            max_wait_s=config.batch.max_wait_ms / 1000,
            wake=self._wake,
            on_report=self._batch_done,
        )
        self._recovery = Recovery(
            engine=engine,
            processor=processor,
            dispatcher=self._dispatcher,
            instance=instance,
            in_progress=config.in_progress,
            after_suspect=self._after_suspect,
            stop=stop,
        )
        paths = config.paths
        self._site = SiteWatch(
            paths.inbox, (paths.processed, paths.failed), mounts or SiteMounts(), wake=self._wake
        )
        self.report = RunReport()
        # Turns of the loop so far; tests wait on it instead of sleeping.
        self.turns = 0

    @property
    def parked_frames(self) -> int:
        """Frames claimed whose batch waits for the database (or disk) to come back."""
        return len(self._dispatcher.parked)

    @property
    def file_workers(self) -> FileWorkers | None:
        return self._processor.file_workers

    @property
    def in_flight_seconds(self) -> float | None:
        return self._dispatcher.in_flight_seconds()

    def wake(self) -> None:
        self._wake.set()

    def request_reload(self) -> None:
        """Reload the head before the next batch (SIGHUP)."""
        self._reload_requested.set()
        self._wake.set()

    def run(self, *, once: bool = False) -> RunReport:
        events = None if once else self._events_for_mode()
        try:
            self._loop(self._start(events), once=once)
            # Stopping: the batch in hand is finished and committed, nothing new is taken.
            self._telemetry.stopping()
            self._dispatcher.flush()
            self._dispatcher.collect(wait=True)
            self._heartbeat.beat(self._progress(), state="stopped", force=True)
            self._recovery.mark_clean_stop()  # our area's mark, and adopted areas'
        finally:
            # The last batches' figures, held back if they came quickly, even on the way out of
            # a failure: the status file must not keep older ones (it never raises).
            self._telemetry.flush()
            if events is not None:
                events.stop()
            # Whatever happened, the batch in flight ends before the lock goes: another instance
            # must never adopt frames this one is still moving.
            self._dispatcher.shutdown()
            self._processor.close()
            self._recovery.release_all()
            self.instance.release()
            # Close the database last: SQLite checkpoints and removes its -wal and -shm when its
            # last connection closes. Left to the process's exit, they stay behind, owned by
            # whoever ran it: after a `sudo watch --once` the service user cannot open the database.
            self._engine.dispose()
        self.report.recovered = self._recovery.recovered
        self.report.left_in_inbox = self._claims.left(scan=not self._site.inbox_elsewhere())
        self.report.left_parked = len(self._dispatcher.parked)
        return self.report

    def _start(self, events: InboxEvents | None) -> InboxEvents | None:
        """Recovery, the events (None, for polling, when they cannot be had) and the first scan."""
        # A stop before this: nothing touched. From here, recovery stops between frames (run's stop).
        raise_if_stopped(self._stop, "before the recovery of earlier runs' frames")
        # Frames left by a run that crashed are suspects (see watcher.intake.suspects), unless an
        # instance that adopted them stopped cleanly since: that run's crash still counts.
        last_stop = suspects.take_last_stop(self.instance.area)
        self._heartbeat.record_start(stopped_cleanly=last_stop is suspects.LastStop.CLEAN)
        whole = self._recovery.recover(crashed=last_stop is suspects.LastStop.CRASHED)
        if self._stop.is_set():
            logger.info(
                "stopped during start-up, %s the recovery of earlier runs' frames", "after" if whole else "in"
            )
            return None
        listening = events if events is not None and events.start() else None
        self._claims.rescan()
        # Migrated, model loaded, earlier work recovered: only now is the service ready.
        self._telemetry.ready(waiting=self._claims.waiting)
        return listening

    def _loop(self, events: InboxEvents | None, *, once: bool) -> None:
        settings = self._config.inbox
        rescan_every = settings.rescan_interval_s if events is not None else settings.poll_scan_s
        next_rescan = time.monotonic() + rescan_every
        while not self._stop.is_set():
            if not once:
                taken = events.take() if events is not None else EventBatch()
                self._claims.hint(taken.hints)
                self._claims.writers_finished(taken.finished)
                # An inbox under another mount point is left as an inbox gone is (see SiteWatch).
                if (taken.rescan or time.monotonic() >= next_rescan) and not self._site.inbox_elsewhere():
                    if events is not None:
                        events.check_inbox()
                    self._recovery.keep_area()  # before frames are claimed into a new inbox's area
                    self._claims.rescan()
                    self._recovery.adopt_orphans()
                    next_rescan = time.monotonic() + rescan_every
            self.turns += 1
            self._telemetry.turn(waiting=self._claims.waiting, busy_s=self.in_flight_seconds)
            self._heartbeat.beat(self._progress())
            if not self._site.available():
                if once:
                    return
                self._wake.wait(timeout=rescan_every)
                # Cleared, or an inbox event left set would turn the loop without a pause.
                self._wake.clear()
                continue
            if self._turn(once=once):
                return
            self._wake.wait(timeout=self._dispatcher.wait_seconds(settings.poll_interval_ms / 1000))
            self._wake.clear()

    def _turn(self, *, once: bool) -> bool:
        """One turn's work; True when `--once` has nothing left to do."""
        dispatcher = self._dispatcher
        dispatcher.collect(wait=False)
        self._maybe_switch_head()
        self._retry_parked()
        # While the store refuses batches nothing new is taken: a backlog claimed meanwhile would
        # only wait parked (see Dispatcher.flush).
        settling = (
            0 if dispatcher.parked else self._claims.claim_ready(self._take, held_back=dispatcher.has_parked)
        )
        if dispatcher.due() or (once and not settling):
            dispatcher.flush()
        return once and not dispatcher.batch_open and not settling and not dispatcher.busy

    def _take(self, frame: Claimed) -> None:
        # A long backlog is claimed within one turn: the watchdog is fed as it goes (the batches'
        # time in flight worked out only when a ping is due, not for every frame).
        if self._telemetry.watchdog_due():
            self._telemetry.alive(busy_s=self.in_flight_seconds)
        self._dispatcher.add(frame)

    def _maybe_switch_head(self) -> None:
        # Called between batches only, so a batch never mixes two heads.
        if self._reloader is None:
            return
        force = self._reload_requested.is_set()
        self._reload_requested.clear()
        head = self._reloader.check(serving=self._processor.head, force=force)
        if head is not None:
            self._processor.head = head

    def _retry_parked(self) -> None:
        frames = self._dispatcher.take_parked_when_due()
        if not frames:
            return
        try:
            self._recovery.finish_or_process(frames)
        except (StorageError, OSError) as error:
            if not is_transient(error):
                raise
            handed_on = {frame.key for frame in self._dispatcher.held()}
            self._dispatcher.park([frame for frame in frames if frame.key not in handed_on], error)

    def _batch_done(self, report: BatchReport) -> None:
        self._telemetry.alive(busy_s=None)  # a batch finished: the pipeline moves
        self.report.add(report)
        self._telemetry.batch_done(report)

    def _after_suspect(self) -> None:
        self._telemetry.alive(busy_s=None)
        self._heartbeat.beat(self._progress())

    def _progress(self) -> Progress:
        return Progress(
            claimed=len(self._dispatcher.held()),
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


def _claims_for(
    config: Config, *, instance: InstanceLock, workers: FileWorkers | None, stop: threading.Event
) -> Claims:
    settle_s, timeout_s = config.inbox.settle_ms / 1000, config.inbox.readiness_timeout_s
    return Claims(
        inbox=config.paths.inbox,
        area=instance.area,
        readiness=ReadinessTracker(settle_s=settle_s, timeout_s=timeout_s),
        stop=stop,
        # With file processes, the waiting names are claimed on them in bulk.
        bulk=partial(
            workers.claim,
            inbox=config.paths.inbox,
            area=instance.area,
            settle_s=settle_s,
            timeout_s=timeout_s,
        )
        if workers is not None
        else None,
        remove_empty_after_s=config.inbox.remove_empty_folders_after_s,
    )
