"""Finishing what earlier runs left in progress: this instance's last run, and dead instances'.

A frame whose row is committed only needs its move (the same delivery a batch ends with); the
others are processed again. Frames left by a run that crashed are suspects: each is processed
alone, and one that was in progress during MAX_CRASHES crashes fails unopened (see
watcher.intake.suspects).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from model.messages import first_line
from watcher.intake import relocations, suspects
from watcher.intake.claiming import claimed_frames
from watcher.pipeline.backoff import is_transient
from watcher.pipeline.dispatch import Dispatcher
from watcher.pipeline.processing import BatchProcessor
from watcher.pipeline.stages import Claimed
from watcher.service.instance import InstanceLock, orphaned_instances
from watcher.store import instances, writes
from watcher.store.errors import StorageError
from watcher.wording import plural

logger = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        *,
        engine: Engine,
        processor: BatchProcessor,
        dispatcher: Dispatcher,
        instance: InstanceLock,
        in_progress: Path,
        after_suspect: Callable[[], None],
        stop: threading.Event | None = None,
    ) -> None:
        self._engine = engine
        self._processor = processor
        self._dispatcher = dispatcher
        self._instance = instance
        self._in_progress = in_progress
        self._after_suspect = after_suspect  # after each suspect: a long line feeds the watchdog
        self._stop = stop or threading.Event()  # set: recovery ends between two frames
        self._adopted: list[InstanceLock] = []  # dead instances' locks, held while we hold their frames
        # How each adopted area's last run ended: its mark, taken when the adoption began, is ours
        # to give back as it was (a dead instance's crash is never turned into its clean stop).
        self._last_stops: dict[Path, suspects.LastStop] = {}
        # Adopted areas whose recovery a transient error stopped part-way: after a crash, frames
        # not reached yet stay suspects whatever we do.
        self._cut_short: set[Path] = set()
        # Keys of the frames failed unopened as crashers in this run: a retry of a batch that
        # carried one (its row waited for the database) fails it unopened again, even where its
        # mark (suspects.FAILED_UNOPENED) could not be written.
        self._failed_unopened: set[str] = set()
        # Suspects processed alone, by key: their count before that attempt, put back
        # at a clean stop for those still held (parked) in an area left unmarked, which that
        # attempt did not crash. In a marked area the raised count stays: the next run takes the
        # frame for no suspect and raises nothing, so it counts that run's crash, if any.
        self._counted: dict[str, int] = {}
        self.recovered = 0
        self.left_by_stop = 0  # frames a stop left in progress, not reached by the recovery

    def recover(self, *, crashed: bool) -> bool:
        """Our own area, then any dead instance's; everything committed and moved on return. False
        when a stop cut it short: what was not reached waits for the next start (_recover_area)."""
        self._recover_area(self._instance.area, crashed=crashed)
        self.adopt_orphans()
        self._dispatcher.collect(wait=True)
        self._release_adopted()
        return self.left_by_stop == 0

    def keep_area(self) -> None:
        """Our lock and area, and adopted ones, where the inbox is now (see InstanceLock.keep).
        When the inbox was replaced, the claims come over from the old one, once no batch moves
        or releases claims (those in flight are collected first: they park, see check_claims);
        then those no batch holds any more (moved before the area moved, their moves finding
        nothing) are finished, as at start."""
        if not self._instance.in_place():
            self._dispatcher.collect(wait=True)
        areas = [self._instance.area] if self._instance.keep() else []
        # A dead instance's area comes over too (its frames held here would be found nowhere);
        # where it cannot (another filesystem, its name taken meanwhile), the daemon stops.
        areas += [orphan.area for orphan in self._adopted if orphan.keep()]
        held = {frame.key for frame in self._dispatcher.held()}
        for area in areas:
            self._finish_brought_over(area, held=held)

    def _finish_brought_over(self, area: Path, *, held: set[str]) -> None:
        frames = claimed_frames(area)
        left = [frame for frame in frames if frame.key not in held]
        try:
            self._correct_relocated(area, {frame.key for frame in frames})
            if left:
                logger.info("finishing %s brought over from the old inbox", plural(len(left), "frame"))
                self.finish_or_process(left)
        except (StorageError, OSError) as error:
            if not is_transient(error):
                raise
            # The database or an output folder away, as a batch finds them: the frames wait,
            # parked, instead of the daemon stopping; the notes stay for their retry (see
            # watcher.intake.relocations), and whatever is left for the next start.
            handed_on = {frame.key for frame in self._dispatcher.held()}
            waiting = [frame for frame in left if frame.key not in handed_on]
            if waiting:
                self._dispatcher.park(waiting, error)
            else:
                logger.warning("cannot finish what came over into %s yet: %s", area, first_line(error))

    def adopt_orphans(self) -> None:
        """An instance whose lock we can take is gone: its claimed frames are ours to finish. Its
        lock stays ours while any of them is (parked while an output folder is away, say, or in a
        batch on a worker): let go, the next rescan, ours or another instance's, would adopt the
        same frames again and process them twice."""
        self._release_adopted()
        for orphan in orphaned_instances(self._in_progress, own=self._instance.name):
            if self._stop.is_set():
                orphan.release()  # untouched: its next adopter's
                break
            self._adopted.append(orphan)
            # Taken before its frames are touched: if this run dies among them, they are a
            # crash's leftovers for the next adopter, as our own would be.
            last_stop = self._last_stops[orphan.area] = suspects.take_last_stop(orphan.area)
            try:
                if last_stop is suspects.LastStop.CLEAN:
                    # Its `stopped` heartbeat may not have reached the database (away, as why it
                    # left frames): said now, as the mark that said so goes with its area.
                    instances.record_clean_stop(self._engine, orphan.name)
                if self._recover_area(orphan.area, crashed=last_stop is suspects.LastStop.CRASHED):
                    logger.info("recovered the frames of instance %s, which is gone", orphan.name)
            except (StorageError, OSError) as error:
                if not is_transient(error):
                    raise
                # The database or an output folder is away: the next rescan tries again; the
                # frames stay where they are.
                logger.warning("cannot adopt instance %s's frames yet: %s", orphan.name, first_line(error))
                self._cut_short.add(orphan.area)
                break
        self._release_adopted()

    def mark_clean_stop(self) -> None:
        """A clean stop: frames we still hold (parked), ours and dead instances', are no suspects
        for whoever takes them next, so each area is marked. Not so an area whose last run
        crashed and whose recovery was cut short (its frames not reached yet must still each be
        processed alone by the next adopter), nor one holding a crasher failed unopened whose
        mark could not be written (it would be opened in a batch), nor one where no mark can be
        made (out of inodes): those stay unmarked, and the suspects we hold in them get back the
        count they had, as no crash came of our attempt (the next run raises it again)."""
        held = self._dispatcher.held()
        areas = [self._instance.area, *(orphan.area for orphan in self._adopted)]
        crashed = suspects.LastStop.CRASHED
        unmarked = {area for area in self._cut_short if self._last_stops.get(area) is crashed}
        unmarked |= {
            frame.area
            for frame in held
            if frame.key in self._failed_unopened
            and not (suspects.failed_unopened(frame) or suspects.mark_failed_unopened(frame) is None)
        }
        for area in areas:
            if area not in unmarked and not suspects.mark_clean_stop(area, last=self._mark_for(area)):
                unmarked.add(area)  # no mark could be made: the next run takes it for a crash's
        for frame in held:
            crashes = self._counted.get(frame.key)
            if crashes is not None and frame.area in unmarked:
                with contextlib.suppress(OSError):
                    suspects.record_attempt(frame, crashes)

    def release_all(self) -> None:
        """On the way out: the frames still held go back to whoever adopts them next."""
        for orphan in self._adopted:
            orphan.release()
        self._adopted = []
        self._last_stops.clear()
        self._cut_short.clear()
        self._counted.clear()
        self._failed_unopened.clear()

    def _release_adopted(self) -> None:
        # At a rescan: the locks of the dead instances none of whose frames we hold any more go,
        # with their areas once empty; so do the counts of suspects done with.
        if not (self._adopted or self._counted or self._failed_unopened):
            return
        # From the frames held, never a listing of the area: its frames move out of it on the
        # lanes meanwhile, and a listing could see one go between two looks (FileNotFoundError).
        frames = self._dispatcher.held()
        self._counted = {
            frame.key: self._counted[frame.key] for frame in frames if frame.key in self._counted
        }
        self._failed_unopened &= {frame.key for frame in frames}
        held = [frame.work_path_text for frame in frames]
        kept: list[InstanceLock] = []
        for orphan in self._adopted:
            inside = f"{orphan.area}{os.sep}"
            if any(path.startswith(inside) for path in held):
                kept.append(orphan)
                continue
            with contextlib.suppress(OSError):
                orphan.area.rmdir()
            last_stop = self._last_stops.pop(orphan.area, suspects.LastStop.CRASHED)
            if orphan.area in self._cut_short and last_stop is not suspects.LastStop.CRASHED:
                # Its frames left as its last run left them: so is its mark.
                suspects.mark_clean_stop(orphan.area, last=last_stop)
            self._cut_short.discard(orphan.area)
            orphan.release()
        self._adopted = kept

    def _mark_for(self, area: Path) -> suspects.LastStop:
        """The mark our clean stop leaves in `area`: CLEAN in our own and in a dead instance's
        that had stopped cleanly, HANDED_ON in one whose instance had not (its crash stays told)."""
        clean = suspects.LastStop.CLEAN
        return clean if self._last_stops.get(area, clean) is clean else suspects.LastStop.HANDED_ON

    def _recover_area(self, area: Path, *, crashed: bool) -> int:
        leftovers = claimed_frames(area)
        self._correct_relocated(area, {frame.key for frame in leftovers})
        if leftovers:
            logger.info(
                "recovering %s left in progress in %s%s",
                plural(len(leftovers), "frame"),
                area,
                " by a run that crashed: each is processed alone" if crashed else "",
            )
            handed_on = self.finish_or_process(leftovers, crashed=crashed, stoppable=True)
            self.recovered += handed_on
            if handed_on < len(leftovers):  # a stop: the rest stays as it was, suspects after a crash
                self.left_by_stop += len(leftovers) - handed_on
                left = plural(len(leftovers) - handed_on, "frame stays", "frames stay")
                logger.info("stop requested: %s in progress in %s for the next start", left, area)
                self._cut_short.add(area)  # after a crash, left unmarked at the stop (mark_clean_stop)
                if crashed:  # a dead instance's last stop is set already
                    self._last_stops.setdefault(area, suspects.LastStop.CRASHED)
        return len(leftovers)

    def _correct_relocated(self, area: Path, claimed: set[str]) -> None:
        """Frames moved elsewhere than their rows said, and killed before their rows were told:
        their notes say where (see watcher.intake.relocations); the rows say so now."""
        moved = relocations.left_behind(area, claimed)
        if not moved:
            return
        writes.set_stored_paths(self._engine, moved)
        for key, where in moved.items():
            logger.info("frame %s had gone to %s before its row said so: its row says so now", key, where)
            relocations.note_path(area, key).unlink(missing_ok=True)

    def finish_or_process(
        self, frames: list[Claimed], *, crashed: bool = False, stoppable: bool = False
    ) -> int:
        """Frames whose row is committed only need their move; the others are processed again,
        each alone when a crash left them (one of them may be what crashed the daemon). When
        `stoppable` (recovery), a stop ends it between two frames; returns how many were handed on."""
        committed = writes.committed(self._engine, [frame.key for frame in frames])
        handed_on = 0
        for frame in frames:
            if stoppable and self._stop.is_set():
                break
            handed_on += 1
            record = committed.get(frame.key)
            if record is not None:
                self._processor.finish_committed(frame, record)
            elif crashed or frame.key in self._failed_unopened or suspects.failed_unopened(frame):
                # A crash's leftover, or a frame failed unopened as a crasher whose row could not
                # be stored then (parked, or left claimed by a clean stop): never in a batch.
                self._process_suspect(frame)
            else:
                self._dispatcher.add(frame)
        self._dispatcher.flush()
        return handed_on

    def _process_suspect(self, frame: Claimed) -> None:
        crashes = suspects.crashes_survived(frame)
        if crashes >= suspects.MAX_CRASHES:
            self._failed_unopened.add(frame.key)
            if crashes < suspects.FAILED_UNOPENED:  # not said again at each retry of its row
                logger.error(
                    "frame %s was in progress during %s: failing it unopened",
                    frame.relative,
                    plural(crashes, "crash"),
                )
                why = suspects.mark_failed_unopened(frame)
                if why is not None:
                    logger.warning("cannot mark %s failed unopened: %s", frame.relative, why)
            self._dispatcher.submit([frame], refused={frame.key: suspects.crash_reason()})
        else:
            try:
                suspects.record_attempt(frame, crashes + 1)
                self._counted[frame.key] = crashes
            except OSError as error:
                logger.warning("cannot count the attempts of %s: %s", frame.relative, error.strerror)
            self._dispatcher.submit([frame])
        self._dispatcher.collect(wait=True)
        self._after_suspect()
