"""Frames into batches, batches onto workers, outcomes back: the queue between claiming and the
stages (see watcher.pipeline.processing).

A flushed batch is processed on a worker thread while the loop claims the next one, whose frames
are read and decoded as they are claimed: the model never waits for file handling. How many
batches are in flight at once is the processor's `lanes` (see watcher.pipeline.lanes). A batch
flushed before it is full runs alone with every thread. A batch the store cannot take now
(StorageUnavailable, a full disk) is parked: its frames stay claimed until a retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_any
from dataclasses import dataclass

from model.messages import first_line
from watcher.pipeline.backoff import Backoff, is_transient
from watcher.pipeline.processing import BatchProcessor
from watcher.pipeline.stages import Claimed
from watcher.reports import BatchReport
from watcher.store.errors import StorageError
from watcher.wording import plural

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _InFlight:
    frames: list[Claimed]
    outcome: Future[BatchReport]
    since: float  # time.monotonic() when it was handed to a worker


class Dispatcher:
    def __init__(
        self,
        processor: BatchProcessor,
        *,
        batch_size: int,
        max_wait_s: float,
        wake: threading.Event,
        on_report: Callable[[BatchReport], None],
    ) -> None:
        self._processor = processor
        self._batch_size = batch_size
        self._max_wait_s = max_wait_s
        self._wake = wake
        self._on_report = on_report
        self._lanes = processor.lanes
        self._runner = ThreadPoolExecutor(max_workers=self._lanes.count, thread_name_prefix="batch")
        self._batch: list[Claimed] = []
        self._batch_opened = 0.0
        self._in_flight: list[_InFlight] = []
        self.parked: list[Claimed] = []
        self._backoff = Backoff()

    @property
    def batch_open(self) -> bool:
        return bool(self._batch)

    @property
    def busy(self) -> bool:
        return bool(self._in_flight)

    def has_parked(self) -> bool:
        return bool(self.parked)

    def held(self) -> list[Claimed]:
        """Every frame claimed and not finished: in the batch, parked or on a worker."""
        return [*self._batch, *self.parked, *(frame for batch in self._in_flight for frame in batch.frames)]

    def in_flight_seconds(self) -> float | None:
        """How long the oldest batch on a worker has been running; None when there is none."""
        if not self._in_flight:
            return None
        return time.monotonic() - min(batch.since for batch in self._in_flight)

    def add(self, frame: Claimed) -> None:
        if not self._batch:
            self._batch_opened = time.monotonic()
        self._batch.append(frame)
        self._processor.prefetch(frame)
        if len(self._batch) >= self._batch_size:
            self.flush()

    def due(self) -> bool:
        return bool(self._batch) and time.monotonic() - self._batch_opened >= self._max_wait_s

    def wait_seconds(self, idle_s: float) -> float:
        if not self._batch:
            return idle_s
        return min(idle_s, max(self._max_wait_s - (time.monotonic() - self._batch_opened), 0.0))

    def flush(self) -> None:
        """Hand the batch to a worker once there is room for it (see watcher.pipeline.lanes); or
        park it, unopened, while the store refuses batches (frames parked, their retry not due)."""
        frames, self._batch = self._batch, []
        if not frames:
            return
        threads = self._room_for(frames)
        if self.parked:
            # Refused while this one waited for room (a lock, a full disk): it would wait out the
            # same busy timeout, and so would each batch claimed after it, a stop waiting for all
            # of them. It waits with the parked frames for their retry.
            self._processor.forget_prefetched(frames)
            self.parked.extend(frames)
            logger.info("%s parked unopened with the batch the store refused", plural(len(frames), "frame"))
            return
        self._start(frames, threads=threads, refused=None)

    def submit(self, frames: list[Claimed], *, refused: dict[str, str] | None = None) -> None:
        self._start(frames, threads=self._room_for(frames), refused=refused)

    def _room_for(self, frames: list[Claimed]) -> int:
        """Wait until the batch `frames` may start; the CPU threads it may use."""
        lanes = self._lanes
        # A full batch on a CPU shares the cores with the batches beside it, one thread each; a
        # partial one (a quiet inbox) is about latency and runs alone on every thread.
        alone = lanes.shares_cores and len(frames) < self._batch_size
        if alone:
            self.collect(wait=True)
        else:
            self._wait_for_room(lanes.count)
        return lanes.all_threads if alone else lanes.threads_each

    def _start(self, frames: list[Claimed], *, threads: int, refused: dict[str, str] | None) -> None:
        lanes = self._lanes
        future = self._runner.submit(self._processor.process, frames, cpu_threads=threads, refused=refused)
        future.add_done_callback(lambda _: self._wake.set())
        self._in_flight.append(_InFlight(frames, future, since=time.monotonic()))
        if threads == lanes.all_threads and not self._processor.model_on_accelerator:
            # On the CPU a pass on every thread needs every core to itself: torch's threads meet
            # at a barrier after each operation, so one core busy elsewhere (decoding the next
            # batch) stalls the whole pass. The next batch's file work waits for this one.
            self.collect(wait=True)

    def _wait_for_room(self, lanes: int) -> None:
        self.collect(wait=False)
        while len(self._in_flight) >= lanes:
            wait_for_any([batch.outcome for batch in self._in_flight], return_when=FIRST_COMPLETED)
            self.collect(wait=False)

    def collect(self, *, wait: bool) -> None:
        """Take back the outcomes of the batches in flight: those done, or all of them (waiting)."""
        for batch in list(self._in_flight):
            if wait or batch.outcome.done():
                self._take_back(batch)

    def _take_back(self, batch: _InFlight) -> None:
        try:
            report = batch.outcome.result()  # in flight (and so counted by in_flight_seconds) until done
        except (StorageError, OSError) as error:
            self._in_flight.remove(batch)
            if not is_transient(error):
                raise
            # Locked by another process, out of space, or the database server restarting: nothing
            # of this batch that was not committed is lost; keep the frames claimed and retry,
            # taking nothing new meanwhile.
            self.park(batch.frames, error)
            return
        self._in_flight.remove(batch)
        self._backoff.succeeded()
        self._on_report(report)

    def park(self, frames: list[Claimed], error: BaseException) -> None:
        self.parked.extend(frames)
        delay = self._backoff.failed()
        logger.error(
            "cannot store a batch of %s (%s); retrying in %.0f s",
            plural(len(frames), "frame"),
            first_line(error),
            delay,
        )

    def take_parked_when_due(self) -> list[Claimed]:
        """The parked frames, once their retry is due (they are no longer parked)."""
        if not self.parked or not self._backoff.due():
            return []
        frames, self.parked = self.parked, []
        logger.info("retrying %d parked frames", len(frames))
        return frames

    def shutdown(self) -> None:
        self._runner.shutdown(wait=True)
