"""One batch of claimed frames through the four stages: decode, classify, record, deliver.

See watcher.pipeline.stages for what a frame is between them. The claims are made durable while
the model computes; the rows are committed before any file moves.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack

import torch
from sqlalchemy import Engine

from model.clip_features import ClipFeatureExtractor
from model.device_wait import take_device_wait
from model.heads import Head
from model.messages import first_line
from model.packed import PackedBmp
from watcher.faults import kill_point
from watcher.intake import relocations
from watcher.pipeline.arenas import GPU_ARENAS, ArenaPool, ArenasUnavailable, served_in_place
from watcher.pipeline.classifying import Classifier
from watcher.pipeline.decoding import Decoder
from watcher.pipeline.delivery import Deliverer
from watcher.pipeline.file_work import move_all, sync_claims
from watcher.pipeline.file_workers import FileWorkers
from watcher.pipeline.lanes import GPU_LANES, Lanes, lanes_for
from watcher.pipeline.recording import Recorder
from watcher.pipeline.stages import Claimed, Classified, Decoded, FrameBounds, OutputFolders, Stored
from watcher.reports import BatchReport
from watcher.store.file_guard import DatabaseFileGuard
from watcher.store.records import ResultRecord, Status
from watcher.wording import plural

logger = logging.getLogger(__name__)


class BatchProcessor:
    def __init__(
        self,
        *,
        engine: Engine,
        extractor: ClipFeatureExtractor,
        head: Head,
        folders: OutputFolders,
        bounds: FrameBounds,
        store_embeddings: bool,
        decode_workers: int = 1,
        file_processes: int = 0,
        batch_size: int = 32,
        gpu_lanes: int = GPU_LANES,
        database_guard: DatabaseFileGuard | None = None,
        claims_in_place: Callable[[], bool] = lambda: True,
    ) -> None:
        """`claims_in_place` says whether the claims' paths still lead to them (see
        InstanceLock.in_place): a batch waits, parked, while they do not."""
        self.head = head
        self._extractor = extractor
        self._gpu_lanes = gpu_lanes
        self._decoder = Decoder(bounds, workers=decode_workers)
        # With file processes, a batch's reading and moves are shared out between them, and its
        # frames are read into an arena leased for the batch (see watcher.pipeline.file_workers).
        self._arenas = self._make_arenas(batch_size) if file_processes else None
        try:
            self._workers = FileWorkers(file_processes, bounds) if self._arenas is not None else None
        except BaseException:  # not started: the arenas removed now, not "leaked" to the resource tracker
            self._decoder.close()
            if self._arenas is not None:
                self._arenas.close()
            raise
        self._classifier = Classifier(extractor, store_embeddings=store_embeddings)
        guard = database_guard or DatabaseFileGuard(engine)
        self._recorder = Recorder(engine, folders, guard, claims_in_place=claims_in_place)
        self._said_frames_stay = False  # warned that frames could not be taken to the device
        mover = self._workers.move if self._workers else move_all
        self._deliverer = Deliverer(engine, folders, mover, claims_in_place=claims_in_place)

    def process(
        self, frames: list[Claimed], *, cpu_threads: int | None = None, refused: dict[str, str] | None = None
    ) -> BatchReport:
        """Run one batch to the end (rows committed, files moved); `cpu_threads` is how many CPU
        threads its model work may use (see watcher.pipeline.lanes). Frames named in `refused`
        (key → reason) fail with that reason without being opened (see watcher.intake.suspects)."""
        started = time.perf_counter()
        head = self.head  # one head for the whole batch, even if a reload swaps it meanwhile
        if cpu_threads is not None:
            self._extractor.use_cpu_threads(cpu_threads)
        stages = _StageClock()
        if self._workers is not None:
            classified = self._read_and_classify_on_workers(frames, refused or {}, head, stages)
        else:
            classified = self._read_and_classify(frames, refused or {}, head)
            stages.lap("read+model")
        stored = self._recorder.record(classified)
        stages.lap("commit")
        kill_point("committed")
        self._deliverer.deliver(stored)
        self._recorder.moved(stored)
        stages.lap("move")
        report = _report(stored, seconds=time.perf_counter() - started, model_version=head.version)
        report.stage_seconds = stages.seconds
        logger.info(
            "batch: %s (%d ok, %d failed) in %.2f s, %.1f frames/s, model %s",
            plural(report.frames, "frame"),
            report.ok,
            report.failed,
            report.seconds,
            report.frames / report.seconds if report.seconds > 0 else float("inf"),
            head.version,
        )
        return report

    def _read_and_classify(
        self, frames: list[Claimed], refused: dict[str, str], head: Head
    ) -> list[Classified]:
        decoded = self._decoder.decode_all(frames, refused=refused)
        kill_point("decoded")
        # The claims must be on disk before their rows are (see file_work.sync_claims). Their
        # fsyncs wait for the disk while the model computes.
        claims_synced = self._decoder.run_beside(lambda: sync_claims(frames))
        classified = self._classifier.classify(decoded, head=head)
        kill_point("inferred")
        claims_synced.result()
        return classified

    def _read_and_classify_on_workers(
        self, frames: list[Claimed], refused: dict[str, str], head: Head, stages: _StageClock
    ) -> list[Classified]:
        assert self._workers is not None and self._arenas is not None, "made together"
        with ExitStack() as holding:
            arena = holding.enter_context(self._arenas.lease())
            stages.lap("wait for an arena")
            decoded = self._workers.read(frames, refused=refused, arena=arena)
            stages.lap("read")
            self._arenas.fit([size for item in decoded if (size := _served_in_place(item)) is not None])
            kill_point("decoded")
            # Flushed here, once a folder a batch, while the frames go to the device and the model
            # (each file process flushing its share's folders put the area's flush on every
            # worker's read, and on the arena's hold).
            claims_synced = self._decoder.run_beside(lambda: sync_claims(frames))
            if self.model_on_accelerator and self._taken_to_device(decoded):
                holding.close()  # the arena goes back for the next batch's reading
                stages.lap("to the device")
            # Otherwise it goes back once the model has the pixels: the copies out of it are
            # finished when the features come back (see model.packed).
            take_device_wait()  # from this batch on
            classified = self._classifier.classify(decoded, head=head)
            stages.lap("model")
            if self.model_on_accelerator:
                # Launching the work (Python, the GIL) told apart from the device's own time.
                stages.move("model", "model: waiting for the device", take_device_wait())
            del decoded  # its pixels may be views of the arena
        kill_point("inferred")
        claims_synced.result()
        return classified

    def _taken_to_device(self, decoded: list[Decoded]) -> bool:
        """The frames' pixels copied out of their arena onto the model's device, in place in
        `decoded`; False (nothing changed) when the device has no room for them, or the copy
        failed otherwise."""
        packed = [item.pixels for item in decoded if isinstance(item.pixels, PackedBmp)]
        if not packed:
            return True  # nothing of the batch lies in the arena (pictures came through the pipes)
        try:
            moved = iter(self._extractor.taken_in(packed))
        except torch.OutOfMemoryError as error:  # the model's own pass still has the frames
            # (tried again each batch; with fewer arenas than lanes, fewer batches read at once)
            if not self._said_frames_stay:
                logger.warning("frames stay in their arena until the model has them: %s", first_line(error))
                self._said_frames_stay = True
            return False
        except torch.AcceleratorError:
            raise  # the device failed: as in the model's pass (watcher.pipeline.classifying)
        except Exception as error:  # noqa: BLE001 - as before the copy came first: the model's pass
            # takes the frames from their arena and fails only those it cannot classify
            logger.warning(
                "copying frames to the device failed (%s): the model takes them from their arena",
                first_line(error),
            )
            return False
        decoded[:] = [
            # Made directly: dataclasses.replace looks up every field again, for each frame.
            Decoded(item.frame, item.facts, next(moved), item.error)
            if isinstance(item.pixels, PackedBmp)
            else item
            for item in decoded
        ]
        return True

    def _make_arenas(self, batch_size: int) -> ArenaPool | None:
        lanes = self.lanes
        # On a GPU a batch holds its arena only while its frames are read and copied to the
        # device: GPU_ARENAS serve any number of lanes. On a CPU each lane holds one through the model.
        count = max(1, min(lanes.count - 1, GPU_ARENAS)) if self.model_on_accelerator else lanes.count
        try:
            return ArenaPool(count=count, frames=batch_size, device=self._extractor.runtime.device)
        except ArenasUnavailable as error:
            logger.warning("file work stays on threads: %s", error)
            return None

    @property
    def file_workers(self) -> FileWorkers | None:
        """The file worker processes; None when the file work is on threads."""
        return self._workers

    @property
    def model_on_accelerator(self) -> bool:
        """The model runs on a GPU, leaving the CPU free for the next batch's file work."""
        return self._extractor.runtime.device.type != "cpu"

    @property
    def lanes(self) -> Lanes:
        return lanes_for(self._extractor, gpu_lanes=self._gpu_lanes)

    def finish_committed(self, frame: Claimed, record: ResultRecord) -> None:
        """Recovery: the row of `frame` was committed but its move did not happen (or not all)."""
        if os.path.lexists(frame.work_path):
            # Still claimed: a note of an earlier attempt's destination is stale, its move is
            # done again (see watcher.intake.relocations).
            relocations.forget([frame])
        if not os.path.isabs(record.stored_path):
            # The daemon writes absolute paths only: this one (a hand-edited or foreign database)
            # would move the file relative to whatever folder the daemon runs in.
            said = record.stored_path
            record = self._recorder.placed_anew(frame, record)
            logger.warning(
                "frame %s: its row's stored_path %r is not absolute: moving it to %s instead",
                frame.relative,
                said,
                record.stored_path,
            )
        stored = [Stored(frame, record)]
        self._deliverer.deliver(stored)
        # Its name was reserved if this run recorded it (a batch whose moves failed, retried).
        self._recorder.moved(stored)

    def prefetch(self, frame: Claimed) -> None:
        """Start reading, hashing and decoding a claimed frame now, before its batch is processed
        (file processes read a whole batch at once instead)."""
        if self._workers is None:
            self._decoder.prefetch(frame)

    def forget_prefetched(self, frames: list[Claimed]) -> None:
        """Frames prefetched that wait parked instead of being processed: their pixels are not
        held meanwhile (a retry reads them again)."""
        self._decoder.forget(frames)

    def close(self) -> None:
        self._decoder.close()
        if self._workers is not None:
            self._workers.close()
        if self._arenas is not None:
            self._arenas.close()


def _report(stored: list[Stored], *, seconds: float, model_version: str) -> BatchReport:
    report = BatchReport(seconds=seconds, model_version=model_version)
    for item in stored:
        record = item.record
        if record.file_mtime is not None:
            report.arrival_delays.append((record.processed_at - record.file_mtime).total_seconds())
        if record.status == Status.OK:
            report.ok += 1
        else:
            report.failed += 1
            report.failures[record.source_path] = record.error or ""
        key = (record.camera or "", record.label if record.status == Status.OK and record.label else "failed")
        report.per_camera[key] = report.per_camera.get(key, 0) + 1
    return report


class _StageClock:
    """Seconds spent in each stage of one batch, lap by lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def move(self, stage: str, part: str, seconds: float) -> None:
        """Count `seconds` of what `stage` took as a stage of its own, `part`."""
        self.seconds[stage] -= seconds
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds


def _served_in_place(item: Decoded) -> int | None:
    """The file size of a frame read whole whose rows an arena can hold (see ArenaPool.fit)."""
    facts = item.facts
    if item.error is not None or facts.size_bytes is None or facts.width is None or facts.height is None:
        return None
    return facts.size_bytes if served_in_place(facts.size_bytes, facts.width, facts.height) else None
