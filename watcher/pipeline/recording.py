"""Stage three: each classified frame's row committed (Classified → Stored).

The database row is the record: the batch's rows are committed in one transaction before any
file leaves the in-progress area, and each row names the place its file will go. A frame that
already has its row (a retry after a commit whose answer was lost) keeps that row.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from watcher.intake.held_lookups import Lookup, LookupsByFolder
from watcher.intake.mounts import folder_stat
from watcher.intake.moving import is_placement_error
from watcher.intake.names import storable
from watcher.intake.placement import ClaimsAway, OutputFolderAway, place, place_flat
from watcher.intake.site_mounts import Identity, identity_of
from watcher.pipeline.stages import Claimed, Classification, Classified, FileFacts, OutputFolders, Stored
from watcher.store import writes
from watcher.store.errors import StorageFailed
from watcher.store.file_guard import DatabaseFileGuard
from watcher.store.records import ResultRecord, Status
from watcher.store.schema import utc_now

logger = logging.getLogger(__name__)


def check_output_folders(folders: OutputFolders) -> dict[Path, Identity]:
    """Each output folder's device and inode (what placing's looks are chosen by, and the folder
    the moves go into); OutputFolderAway if one is not a folder now, or is under another mount
    point than at start."""
    devices = {}
    for root in (folders.processed, folders.failed):
        info = folder_stat(root)
        if info is None:
            # Gone (an unmounted share): recreating it would put frames on the wrong disk. The
            # rows are committed; the batch waits, and its moves are finished once it is back.
            raise OutputFolderAway(errno.ENOENT, "output folder is missing (unmounted?)", str(root))
        # A share unmounted from the folder itself leaves its mount point, on the local disk,
        # where moved frames would be hidden once it is back: that waits the same way.
        elsewhere = folders.mounts.elsewhere(root, identity_of(info))
        if elsewhere is not None:
            raise OutputFolderAway(errno.ENOENT, f"{elsewhere.described()} (unmounted?)", str(root))
        devices[root] = identity_of(info)
    return devices


def check_claims(in_place: Callable[[], bool]) -> None:
    """ClaimsAway unless the claims are where their paths say (see InstanceLock.in_place)."""
    if not in_place():
        raise ClaimsAway(
            errno.ENOENT, "the inbox was replaced or is away: waiting for its claims to be brought over"
        )


def frame_record(
    frame: Claimed,
    facts: FileFacts,
    classification: Classification | None,
    *,
    error: str | None,
    frame_key: str,
    stored_path: str,
    processed_at: datetime,
    source: str = "inbox",
) -> ResultRecord:
    """A frame's row: what it is, what reading it learned, and what the model said (or why not).
    The daemon's rows and `backfill`'s are both made here."""
    camera = frame.camera  # worked out from the path each time it is asked for
    return ResultRecord(
        frame_key=frame_key,
        camera=storable(camera) if camera is not None else None,
        source_path=storable(frame.relative.as_posix()),
        stored_path=stored_path,
        received_at=frame.received_at,
        processed_at=processed_at,
        status=Status.OK if classification is not None else Status.FAILED,
        error=error,
        sha256=facts.sha256,
        size_bytes=facts.size_bytes,
        width=facts.width,
        height=facts.height,
        file_mtime=facts.file_mtime,
        label=classification.label if classification else None,
        probability=classification.probability if classification else None,
        model_version=classification.model_version if classification else None,
        precision=classification.precision if classification else None,
        embedding=classification.embedding if classification else None,
        embedding_model=classification.embedding_model if classification else None,
        source=source,
    )


class Recorder:
    def __init__(
        self,
        engine: Engine,
        folders: OutputFolders,
        guard: DatabaseFileGuard,
        *,
        claims_in_place: Callable[[], bool] = lambda: True,
    ) -> None:
        self._engine = engine
        # Looked at before the commit: a batch read while its claims were away is read again.
        self._claims_in_place = claims_in_place
        self._folders = folders
        self._guard = guard
        self._reserving = threading.Lock()
        # Destinations (as text, as rows hold them) of rows committed, files not yet moved.
        self._reserved: set[str] = set()
        # How a name's place on disk is looked at: with the GIL kept, on a local disk.
        self._lookups = LookupsByFolder()

    def moved(self, stored: list[Stored]) -> None:
        """The batch's files are where their rows say: their names need no reserving any more."""
        with self._reserving:
            self._reserved -= {item.record.stored_path for item in stored}

    def placed_anew(self, frame: Claimed, record: ResultRecord) -> ResultRecord:
        """The committed `record` of `frame` with a place for it in its output folder, as a batch
        gives one, the row made to say so before the file moves (its stored_path is not one the
        daemon wrote)."""
        check_output_folders(self._folders)  # placing would otherwise make a missing one again
        root = self._folders.for_status(record.status)
        with self._reserving:
            taken = set(self._reserved)
            try:
                destination = place(root, frame, taken=taken)
            except OSError as error:
                if not is_placement_error(error):
                    raise
                destination = place_flat(root, frame, taken=taken)
            self._reserved.add(destination)
        try:
            writes.set_stored_paths(self._engine, {frame.key: destination})
        except BaseException:
            with self._reserving:
                self._reserved.discard(destination)
            raise
        return replace(record, stored_path=destination)

    def record(self, classified: list[Classified]) -> list[Stored]:
        check_claims(self._claims_in_place)
        devices = check_output_folders(self._folders)  # placing would otherwise make them again
        now, made = utc_now(), set[str]()
        looks = {root: self._lookups.under(root, device) for root, (device, _) in devices.items()}
        with self._reserving:
            # Batches in flight side by side must not reserve one name twice (a camera that
            # uploads `snapshot.bmp` again): the names reserved and not yet moved count as taken.
            taken = set(self._reserved)
            records = {item.frame.key: self._record(item, now, taken, made, looks) for item in classified}
            reserved = {record.stored_path for record in records.values()}
            self._reserved |= reserved
        stored: list[Stored] = []
        try:
            stored = self._commit(classified, records, taken)
        finally:
            # From now on the rows say where each file goes (a batch that failed reserves nothing:
            # its retry places its frames again).
            with self._reserving:
                self._reserved -= reserved
                self._reserved |= {item.record.stored_path for item in stored}
        return stored

    def _commit(
        self, classified: list[Classified], records: dict[str, ResultRecord], taken: set[str]
    ) -> list[Stored]:
        outcome = self._insert(list(records.values()))
        for item in classified:
            reason = outcome.rejected.get(item.frame.key)
            if reason is not None:
                logger.warning("frame %s failed: %s", item.frame.relative, reason)
                bare = self._bare_failed_record(item, records[item.frame.key], reason, taken)
                records[item.frame.key] = bare
                outcome.inserted |= self._insert([bare], bare=True).inserted
        earlier = writes.committed(self._engine, records.keys() - outcome.inserted)
        missing = records.keys() - outcome.inserted - earlier.keys()
        if missing:
            # Neither inserted now nor there before: no file may move without its row.
            raise StorageFailed(f"{len(missing)} rows neither inserted nor found (deleted meanwhile?)")
        for key in earlier:
            logger.info("frame %s already had its row: keeping it", earlier[key].source_path)
        return [
            Stored(item.frame, earlier.get(item.frame.key, records[item.frame.key])) for item in classified
        ]

    def _insert(self, records: list[ResultRecord], *, bare: bool = False) -> writes.InsertOutcome:
        # The guard runs with the write lock held: the file may go while BEGIN waits for it.
        outcome = writes.insert_new(self._engine, records, before_write=self._guard.check)
        if bare and outcome.rejected:
            # The least a row can say did not fit: that is the database's fault, not the frame's.
            raise StorageFailed(next(iter(outcome.rejected.values())))
        return outcome

    def _record(
        self, item: Classified, now: datetime, taken: set[str], made: set[str], looks: dict[Path, Lookup]
    ) -> ResultRecord:
        frame, facts, classification = item.frame, item.facts, item.classification
        error = item.error
        root = self._folders.for_status(item.status)
        try:
            destination = place(root, frame, taken=taken, made=made, exists=looks[root])
        except OSError as placing:
            if not is_placement_error(placing):
                raise
            # Its own path cannot be made there (a file where its folder should be, a folder
            # the daemon may not write): the frame fails, and goes flat into failed/.
            error = f"cannot be placed in {root}: {placing.strerror or placing}"
            logger.warning("frame %s failed: %s", frame.relative, error)
            classification = None
            destination = place_flat(
                self._folders.failed, frame, taken=taken, exists=looks[self._folders.failed]
            )
        return frame_record(
            frame,
            facts,
            classification,
            error=error,
            frame_key=frame.key,
            stored_path=str(destination),
            processed_at=now,
        )

    def _bare_failed_record(
        self, item: Classified, refused: ResultRecord, reason: str, taken: set[str]
    ) -> ResultRecord:
        """The least a frame's row can say: its key, its path in plain ASCII, why, and where it went."""
        return ResultRecord(
            frame_key=refused.frame_key,
            source_path=refused.source_path.encode("ascii", "backslashreplace").decode("ascii"),
            stored_path=str(place_flat(self._folders.failed, item.frame, taken=taken)),
            received_at=refused.received_at,
            processed_at=refused.processed_at,
            status=Status.FAILED,
            error=reason[:1000],
        )
