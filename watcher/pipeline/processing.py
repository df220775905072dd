"""Processing one batch of claimed frames: read, decode, classify, commit, then move.

The database row is the record: every row of the batch is committed in one transaction, and only
then are the files moved out of the in-progress area to the place the row names.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from model.clip_features import PREPROCESSING_VERSION, ClipFeatureExtractor
from model.heads import Head
from model.images import HEADER_BYTES, UndecodableImage, check_before_reading, decode_pixels
from watcher.faults import kill_on_frame, kill_point
from watcher.intake.claiming import ClaimedFrame, release
from watcher.intake.durability import fsync_dir, fsync_dirs
from watcher.intake.moving import is_placement_error
from watcher.intake.names import storable
from watcher.intake.placement import OutputFolderMissing, move_frame, place, place_flat
from watcher.intake.readiness import incomplete_reason
from watcher.pipeline.lanes import Lanes, lanes_for
from watcher.reports import BatchReport
from watcher.store.embeddings import embedding_model_id, pack_embedding
from watcher.store.file_guard import DatabaseFileGuard
from watcher.store.records import Status, result_record
from watcher.store.schema import Result, utc_now
from watcher.store.writes import insert_new_rows

logger = logging.getLogger(__name__)


# Errors that one row brings on itself (a value the column cannot hold), not the database.
_ROW_ERRORS = (DataError, IntegrityError, UnicodeError, OverflowError, ValueError)


@dataclass(frozen=True)
class OutputFolders:
    processed: Path
    failed: Path

    def for_status(self, status: str) -> Path:
        return self.processed if status == Status.OK else self.failed


@dataclass(frozen=True)
class FrameBounds:
    """What the daemon refuses before reading a frame (see model.images.check_before_reading)."""

    max_pixels: int
    max_file_bytes: int


@dataclass
class _Prepared:
    frame: ClaimedFrame
    row: Result
    pixels: np.ndarray | None  # (height, width, 3) uint8 RGB


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
        self._engine = engine
        self._extractor = extractor
        self.head = head
        self._folders = folders
        self._bounds = bounds
        self._database_guard = database_guard or DatabaseFileGuard(engine)
        # Reading, hashing and decoding release the GIL: threads keep several cores busy on them
        # while the model waits for its batch.
        self._decoders = ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode")
        self._prefetched: dict[str, Future[_Prepared]] = {}
        # Batches may run at once (see watcher.pipeline.lanes); a Keras model is not documented as safe to
        # call from two threads, and the head takes well under a millisecond a batch.
        self._head_lock = threading.Lock()
        self._embedding_model = (
            embedding_model_id(extractor.source, PREPROCESSING_VERSION) if store_embeddings else None
        )

    def process(
        self,
        frames: list[ClaimedFrame],
        *,
        cpu_threads: int | None = None,
        refused: dict[str, str] | None = None,
    ) -> BatchReport:
        """Run one batch to the end (rows committed, files moved); `cpu_threads` is how many CPU
        threads its model work may use (see watcher.pipeline.lanes). Frames named in `refused` (key →
        reason) fail with that reason without being opened (see watcher.intake.suspects)."""
        started = time.perf_counter()
        head = self.head  # one head for the whole batch, even if a reload swaps it meanwhile
        if cpu_threads is not None:
            self._extractor.use_cpu_threads(cpu_threads)
        refused = refused or {}
        # Frames the loop prefetched were read and decoded while the batch before them ran.
        pending = [
            self._prefetched.pop(frame.key)
            if frame.key in self._prefetched
            else self._start(frame, refused=refused.get(frame.key))
            for frame in frames
        ]
        prepared = [future.result() for future in pending]
        kill_point("decoded")
        # The claims must be on disk before their rows are: a claim lost in a power cut after the
        # commit would put a counted frame back in the inbox. Their fsyncs wait for the disk
        # while the model computes.
        claims_synced = self._decoders.submit(_sync_claims, frames)
        self._classify([item for item in prepared if item.pixels is not None], head=head)
        kill_point("inferred")
        self._assign_destinations(prepared)
        claims_synced.result()
        self._commit(prepared)
        kill_point("committed")
        self._move_all(prepared)

        report = BatchReport(seconds=time.perf_counter() - started, model_version=head.version)
        for item in prepared:
            if item.row.file_mtime is not None:
                report.arrival_delays.append((item.row.processed_at - item.row.file_mtime).total_seconds())
            if item.row.status == Status.OK:
                report.ok += 1
            else:
                report.failed += 1
                report.failures[item.row.source_path] = item.row.error or ""
        rate = report.frames / report.seconds if report.seconds > 0 else float("inf")
        logger.info(
            "batch: %d frames (%d ok, %d failed) in %.2f s, %.1f frames/s, model %s",
            report.frames,
            report.ok,
            report.failed,
            report.seconds,
            rate,
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

    def finish_committed_move(self, frame: ClaimedFrame, row: Result) -> None:
        """Recovery: the row of `frame` was committed but its move did not happen (or not all)."""
        finish_committed_move(frame, row, self._engine, self._folders)

    def prefetch(self, frame: ClaimedFrame) -> None:
        """Start reading, hashing and decoding a claimed frame now, before its batch is processed."""
        self._prefetched[frame.key] = self._start(frame)

    def _start(self, frame: ClaimedFrame, *, refused: str | None = None) -> Future[_Prepared]:
        return self._decoders.submit(self._prepare, frame, refused)

    def close(self) -> None:
        self._decoders.shutdown(wait=True)

    def _prepare(self, frame: ClaimedFrame, refused: str | None = None) -> _Prepared:
        camera = frame.camera
        row = Result(
            frame_key=frame.key,
            camera=storable(camera) if camera is not None else None,
            source_path=storable(frame.relative.as_posix()),
            stored_path="",
            received_at=frame.received_at,
            processed_at=frame.received_at,
            status=Status.FAILED,
        )
        pixels = None
        try:
            if refused is not None:
                raise UndecodableImage(refused)
            data = self._read(frame, row)
            kill_on_frame(frame.relative)
            row.sha256 = hashlib.sha256(data).hexdigest()
            truncated = incomplete_reason(data)
            if truncated is not None:
                raise UndecodableImage(truncated)
            pixels = decode_pixels(data, max_pixels=self._bounds.max_pixels)
            row.height, row.width = pixels.shape[:2]
        except UndecodableImage as error:
            row.error = str(error)
        except OSError as error:
            row.error = f"cannot read: {error.strerror or error}"
        except Exception as error:  # noqa: BLE001 - whatever one frame's bytes do, it is that frame's
            row.error = f"cannot decode: {type(error).__name__}: {error}"
        if row.error:
            logger.warning("frame %s failed: %s", frame.relative, row.error)
        return _Prepared(frame=frame, row=row, pixels=pixels)

    def _read(self, frame: ClaimedFrame, row: Result) -> bytes:
        """The frame's bytes, refused from its size and header before the rest is read."""
        info = frame.work_path.lstat()
        row.size_bytes = info.st_size
        row.file_mtime = datetime.fromtimestamp(info.st_mtime, UTC)
        if not stat.S_ISREG(info.st_mode):
            raise UndecodableImage("not a regular file (symlink or special file); never opened")
        # O_NOFOLLOW | O_NONBLOCK: a file swapped for a link or a FIFO since lstat is never followed
        # or waited on.
        descriptor = os.open(frame.work_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(descriptor, "rb", buffering=0) as handle:  # closes the descriptor
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise UndecodableImage("not a regular file (symlink or special file); never opened")
            bounds = self._bounds
            check_before_reading(
                os.pread(descriptor, HEADER_BYTES, 0),
                info.st_size,
                max_pixels=bounds.max_pixels,
                max_file_bytes=bounds.max_file_bytes,
            )
            # One allocation, filled by one read with the GIL released: joining the header to the
            # rest would copy every frame under the GIL, which the GPU pipeline feels at once.
            # At most one byte more than allowed: a file still growing is refused, not slurped.
            data = handle.read(min(info.st_size, bounds.max_file_bytes) + 1)
        row.size_bytes = len(data)
        if len(data) > bounds.max_file_bytes:
            raise UndecodableImage(f"too large: over {bounds.max_file_bytes} bytes (inbox.max_file_bytes)")
        return data

    def _classify(self, decodable: list[_Prepared], *, head: Head) -> None:
        if not decodable:
            return
        try:
            features = self._extractor.image_features([item.pixels for item in decodable])  # type: ignore[misc]
            with self._head_lock:
                predictions = head.predict(features)
        except Exception as error:  # noqa: BLE001 - one bad frame must not fail the batch
            if len(decodable) > 1:
                # Isolate the frame that breaks the model (out of memory, say): split and retry.
                logger.warning("model failed on %d frames (%s); splitting the batch", len(decodable), error)
                middle = len(decodable) // 2
                self._classify(decodable[:middle], head=head)
                self._classify(decodable[middle:], head=head)
                return
            logger.exception("model failed on frame %s", decodable[0].frame.relative)
            decodable[0].row.error = f"model error: {type(error).__name__}: {error}"
            return
        for item, prediction, row_features in zip(decodable, predictions, features, strict=True):
            if self._embedding_model is not None:
                item.row.embedding = pack_embedding(row_features)
                item.row.embedding_model = self._embedding_model
            item.row.label = prediction.label
            item.row.probability = prediction.probability
            item.row.model_version = head.version
            item.row.precision = self._extractor.runtime.precision
            item.row.status = Status.OK
            logger.debug("frame %s: %s %.3f", item.frame.relative, prediction.label, prediction.probability)

    def _commit(self, prepared: list[_Prepared]) -> None:
        """One transaction for the whole batch. A frame that already has its row (a retry after a
        commit whose answer was lost) keeps that row, and its file goes where that row says."""
        try:
            inserted = self._insert([item.row for item in prepared])
        except _ROW_ERRORS as error:
            # A value some row cannot store: find it, row by row (each row is keyed by its frame,
            # so rows already in stay single), and store that frame as failed instead.
            logger.warning("the batch's rows cannot be stored together (%s): storing them one by one", error)
            inserted = self._commit_one_by_one(prepared)
        earlier = [item for item in prepared if item.row.frame_key not in inserted]
        if not earlier:
            return
        with Session(self._engine, expire_on_commit=False) as session:
            existing = {
                row.frame_key: row
                for row in session.scalars(
                    select(Result).where(Result.frame_key.in_([item.row.frame_key for item in earlier]))
                )
            }
        for item in earlier:
            logger.info("frame %s already had its row: keeping it", item.frame.relative)
            item.row = existing[item.row.frame_key]

    def _commit_one_by_one(self, prepared: list[_Prepared]) -> set[str]:
        inserted: set[str] = set()
        for item in prepared:
            try:
                inserted |= self._insert([item.row])
                continue
            except _ROW_ERRORS as error:
                reason = f"cannot store its row: {type(error).__name__}: {str(error).splitlines()[0]}"
            logger.warning("frame %s failed: %s", item.frame.relative, reason)
            item.row = self._bare_failed_row(item, reason)
            inserted |= self._insert([item.row])  # a bare row that fails too is the database's fault
        return inserted

    def _insert(self, rows: list[Result]) -> set[str]:
        """One transaction: the rows whose frame has none yet; returns their frame keys."""
        with self._engine.begin() as connection:
            # Checked with the write lock held: the file may go while BEGIN waits for it.
            self._database_guard.check()
            return insert_new_rows(connection, map(result_record, rows))

    def _bare_failed_row(self, item: _Prepared, reason: str) -> Result:
        """The least a frame's row can say: its key, its path in plain ASCII, why, and where it went."""
        original = item.row
        ascii_source = original.source_path.encode("ascii", "backslashreplace").decode("ascii")
        return Result(
            frame_key=original.frame_key,
            source_path=ascii_source,
            stored_path=str(place_flat(self._folders.failed, item.frame, taken=set())),
            received_at=original.received_at,
            processed_at=original.processed_at,
            status=Status.FAILED,
            error=reason[:1000],
        )

    def _assign_destinations(self, prepared: list[_Prepared]) -> None:
        _check_output_folders(self._folders)  # placing would otherwise make them again
        now = utc_now()
        taken: set[Path] = set()
        for item in prepared:
            item.row.processed_at = now
            root = self._folders.for_status(item.row.status)
            try:
                destination = place(root, item.frame, taken=taken)
            except OSError as error:
                if not is_placement_error(error):
                    raise
                # Its own path cannot be made there (a file where its folder should be, a folder
                # the daemon may not write): the frame fails, and goes flat into failed/.
                self._fail(item, f"cannot be placed in {root}: {error.strerror or error}")
                destination = place_flat(self._folders.failed, item.frame, taken=taken)
            item.row.stored_path = str(destination)

    @staticmethod
    def _fail(item: _Prepared, reason: str) -> None:
        logger.warning("frame %s failed: %s", item.frame.relative, reason)
        row = item.row
        row.status, row.error = Status.FAILED, reason
        row.label = row.probability = row.model_version = row.precision = None
        row.embedding = row.embedding_model = None

    def _move_all(self, prepared: list[_Prepared]) -> None:
        _check_output_folders(self._folders)
        relocated: dict[str, str] = {}  # frame key → where the file went instead
        for item in prepared:
            row = item.row
            final = move_frame(
                item.frame,
                Path(row.stored_path),
                root=self._folders.for_status(row.status),
                sha256=row.sha256,
            )
            if str(final) != row.stored_path:
                # Something took the reserved name between commit and move.
                relocated[row.frame_key] = str(final)
            kill_point("moved")
        # The new names must be on disk before the in-progress copies' names disappear.
        fsync_dirs(Path(item.row.stored_path).parent for item in prepared)
        fsync_dirs(Path(path).parent for path in relocated.values())
        for item in prepared:
            release(item.frame)
        if relocated:
            _record_relocations(self._engine, relocated)


def _check_output_folders(folders: OutputFolders) -> None:
    for root in (folders.processed, folders.failed):
        if not root.is_dir():
            # Gone (an unmounted share): recreating it would put frames on the wrong disk. The
            # rows are committed; the batch waits, and its moves are finished once it is back.
            raise OutputFolderMissing(errno.ENOENT, "output folder is missing (unmounted?)", str(root))


def _record_relocations(engine: Engine, relocated: dict[str, str]) -> None:
    with Session(engine) as session, session.begin():
        for key, stored in relocated.items():
            session.execute(update(Result).where(Result.frame_key == key).values(stored_path=stored))


def _sync_claims(frames: list[ClaimedFrame]) -> None:
    fsync_dirs(directory for frame in frames for directory in _claim_dirs(frame))


def _claim_dirs(frame: ClaimedFrame) -> list[Path]:
    # Every directory whose entries the claim changed: the key folder and its subfolders, the
    # area holding the key folder, and the inbox folder the frame left.
    key_dir = frame.key_dir
    inside = []
    for folder in frame.work_path.parents:
        inside.append(folder)
        if folder == key_dir:
            break
    return [*inside, key_dir.parent, *([frame.source_dir] if frame.source_dir else [])]


def finish_committed_move(frame: ClaimedFrame, row: Result, engine: Engine, folders: OutputFolders) -> None:
    """Recovery: the row of `frame` was committed but the move did not happen (or not all of it)."""
    _check_output_folders(folders)
    final = move_frame(frame, Path(row.stored_path), root=folders.for_status(row.status), sha256=row.sha256)
    fsync_dir(final.parent)
    if str(final) != row.stored_path:
        _record_relocations(engine, {row.frame_key: str(final)})
    release(frame)
