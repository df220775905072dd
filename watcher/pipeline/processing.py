"""One batch of claimed frames through the four stages: decode, classify, record, deliver.

See watcher.pipeline.stages for what a frame is between them. The claims are made durable while
the model computes; the rows are committed before any file moves.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sqlalchemy import Engine

from model.clip_features import ClipFeatureExtractor
from model.heads import Head
from watcher.faults import kill_point
from watcher.intake.durability import fsync_dirs
from watcher.pipeline.classifying import Classifier
from watcher.pipeline.decoding import Decoder
from watcher.pipeline.delivery import Deliverer
from watcher.pipeline.lanes import Lanes, lanes_for
from watcher.pipeline.recording import Recorder
from watcher.pipeline.stages import Claimed, FrameBounds, OutputFolders, Stored
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
        database_guard: DatabaseFileGuard | None = None,
    ) -> None:
        self.head = head
        self._extractor = extractor
        self._decoder = Decoder(bounds, workers=decode_workers)
        self._classifier = Classifier(extractor, store_embeddings=store_embeddings)
        self._recorder = Recorder(engine, folders, database_guard or DatabaseFileGuard(engine))
        self._deliverer = Deliverer(engine, folders)

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
        decoded = self._decoder.decode_all(frames, refused=refused or {})
        kill_point("decoded")
        # The claims must be on disk before their rows are: a claim lost in a power cut after the
        # commit would put a counted frame back in the inbox. Their fsyncs wait for the disk
        # while the model computes.
        claims_synced = self._decoder.run_beside(lambda: _sync_claims(frames))
        classified = self._classifier.classify(decoded, head=head)
        kill_point("inferred")
        claims_synced.result()
        stored = self._recorder.record(classified)
        kill_point("committed")
        self._deliverer.deliver(stored)
        report = _report(stored, seconds=time.perf_counter() - started, model_version=head.version)
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

    @property
    def model_on_accelerator(self) -> bool:
        """The model runs on a GPU, leaving the CPU free for the next batch's file work."""
        return self._extractor.runtime.device.type != "cpu"

    @property
    def lanes(self) -> Lanes:
        return lanes_for(self._extractor)

    def finish_committed(self, frame: Claimed, record: ResultRecord) -> None:
        """Recovery: the row of `frame` was committed but its move did not happen (or not all)."""
        self._deliverer.deliver([Stored(frame, record)])

    def prefetch(self, frame: Claimed) -> None:
        """Start reading, hashing and decoding a claimed frame now, before its batch is processed."""
        self._decoder.prefetch(frame)

    def close(self) -> None:
        self._decoder.close()


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
    return report


def _sync_claims(frames: list[Claimed]) -> None:
    fsync_dirs(directory for frame in frames for directory in _claim_dirs(frame))


def _claim_dirs(frame: Claimed) -> list[Path]:
    # Every directory whose entries the claim changed: the key folder and its subfolders, the
    # area holding the key folder, and the inbox folder the frame left.
    key_dir = frame.key_dir
    inside = []
    for folder in frame.work_path.parents:
        inside.append(folder)
        if folder == key_dir:
            break
    return [*inside, key_dir.parent, *([frame.source_dir] if frame.source_dir else [])]
