"""A dead instance's frames are adopted once: while they wait (an output folder away), later
rescans neither adopt them again (a frame counted twice, its crash count raised until it fails
unopened) nor let another instance take them; once they are moved, its lock and area go."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, mount_tmpfs, query, wait_for
from watcher.config import load_config
from watcher.errors import StartupError
from watcher.intake import suspects
from watcher.intake.claimed import ClaimedFrame
from watcher.intake.claiming import claim, claimed_frames
from watcher.intake.suspects import MAX_CRASHES, crash_reason, crashes_survived, record_attempt
from watcher.pipeline.assembly import build_daemon
from watcher.pipeline.recording import Recorder
from watcher.pipeline.stages import Classified, Stored
from watcher.service.instance import acquire_instance, orphaned_instances
from watcher.service.status import collect_status, instance_state
from watcher.store import writes
from watcher.store.engine import make_engine
from watcher.store.errors import StorageUnavailable
from watcher.store.instances import Beat, record_beat
from watcher.store.migrate import upgrade_to_head
from watcher.store.records import ResultRecord

# Events, and a rescan (where dead instances are adopted) every 0.2 s.
_RESCANNING = {"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0}


def _stop_cleanly(running: RunningDaemon) -> None:
    """As SIGTERM does: the loop ends, the batch in hand is finished, the clean stop marked."""
    running.stop.set()
    running.daemon.wake()
    running.thread.join(timeout=30)
    assert not running.thread.is_alive()


def _start_named(config: Path, name: str) -> RunningDaemon:
    """The daemon loop in a thread as instance `name` (the fixture's daemons take a free name)."""
    stop = threading.Event()
    daemon = build_daemon(load_config(config), stop=stop, instance_name=name)
    running = RunningDaemon(daemon, stop, threading.Thread(target=daemon.run, name="daemon", daemon=True))
    running.thread.start()
    return running


def _running_without_processed(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> tuple[RunningDaemon, Path, Path]:
    """A daemon whose processed/ has gone away (recovery's log in `caplog`): it, processed/, and
    where processed/ went (rename it back to return it)."""
    caplog.set_level(logging.INFO, logger="watcher.pipeline.recovery")
    running = start_daemon(inbox=_RESCANNING)
    processed = tmp_path / "processed"
    return running, processed, running.take_away(processed, caplog)


@contextlib.contextmanager
def _dying_instance(
    tmp_path: Path, names: tuple[str, ...] = ("x.bmp",), *, instance: str = "deadnode"
) -> Iterator[Path]:
    """`instance`'s area, a frame of each name claimed into it; its lock held until the block
    ends, so that no rescan adopts it half made. Dead then as a run that crashed leaves it (no
    clean-stop mark) unless the block marks it."""
    staging = tmp_path / "staging"
    lock = acquire_instance(tmp_path / "inbox" / ".in-progress", name=instance)
    try:
        for name in names:
            write_bmp(staging / name)
            assert claim(staging, lock.area, PurePosixPath(name)) is not None
        yield lock.area
    finally:
        lock.release()


def _dead_instance_with_a_claim(tmp_path: Path) -> Path:
    with _dying_instance(tmp_path) as area:
        return area


def test_an_orphans_frame_waiting_for_its_output_folder_is_adopted_once(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watcher.pipeline.recovery")
    running = start_daemon(inbox=_RESCANNING)
    daemon = running.daemon
    processed = tmp_path / "processed"
    away = running.take_away(processed, caplog)
    area = _dead_instance_with_a_claim(tmp_path)

    wait_for(lambda: daemon.parked_frames == 1, what="the orphan's frame to wait for processed/")
    turns = daemon.turns
    # Waiting for the folder, each turn is a rescan (every 0.2 s): eight of them.
    wait_for(lambda: daemon.turns >= turns + 8, what="eight rescans")
    assert daemon.parked_frames == 1, "the same frame was adopted again"
    assert caplog.text.count("recovering 1 frame") == 1
    assert "failing it unopened" not in caplog.text
    attempts = [path.read_text().strip() for path in area.glob(".attempts*")]
    # One crash survived (its instance's), this attempt the second: one adoption counted once.
    assert attempts == ["2"], attempts
    # Another instance finds the dead one's lock held: it cannot adopt the frame as well.
    assert [orphan.name for orphan in orphaned_instances(area.parent, own="other")] == []

    away.rename(processed)  # and comes back
    daemon.wake()
    wait_for(lambda: files_under(processed) == ["x.bmp"], what="the move to processed/")
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, status FROM results")
    assert rows == [("x.bmp", "ok")]
    wait_for(lambda: not area.exists(), what="the dead instance's area to go at the next rescan")

    def name_free() -> bool:
        try:
            acquire_instance(area.parent, name="deadnode").release()
        except StartupError:
            return False
        return True

    # Its lock is let go once its frames are done (just after its area goes, so that the removal
    # never takes a new instance's area): the name can be taken again.
    wait_for(name_free, what="the dead instance's lock to be let go")


def test_an_orphans_frame_still_waiting_at_a_clean_stop_is_no_suspect_for_the_next_adopter(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, processed, away = _running_without_processed(start_daemon, tmp_path, caplog)
    area = _dead_instance_with_a_claim(tmp_path)
    (frame,) = claimed_frames(area)
    wait_for(lambda: first.daemon.parked_frames == 1, what="the orphan's frame to wait for processed/")

    _stop_cleanly(first)  # with the adopted frame still waiting
    # Its count stays raised by the attempt: the next adopter takes it for no suspect and raises
    # nothing, so a crash of that run is its second.
    assert crashes_survived(frame) == 2
    away.rename(processed)
    start_daemon(inbox=_RESCANNING)

    wait_for(lambda: files_under(processed) == ["x.bmp"], what="the next adopter's move")
    # The dead instance's crash made it a suspect once; the clean stop after it did not.
    assert caplog.text.count("by a run that crashed") == 1, caplog.text
    # The count goes with the claim, released just after the moves are flushed: the moved file
    # shows first (CI9 asserted in between), so the count's going is waited for.
    wait_for(
        lambda: not area.exists() or not list(area.glob(".attempts*")),
        what="the frame's attempt count to go with its claim",
    )


def test_a_crashed_instance_whose_frames_an_adopter_left_waiting_still_shows_its_crash(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, processed, away = _running_without_processed(start_daemon, tmp_path, caplog)
    database = tmp_path / "data" / "results.sqlite3"
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=10_000)
    now = datetime.now(UTC)
    # deadnode's last heartbeat said it was running: it died without saying it stopped.
    record_beat(engine, Beat("deadnode", "elsewhere", 1, "running", now, now, 1, 0, 0, 0.0, None))
    engine.dispose()
    area = _dead_instance_with_a_claim(tmp_path)
    wait_for(lambda: first.daemon.parked_frames == 1, what="the orphan's frame to wait for processed/")

    _stop_cleanly(first)  # with the adopted frame still waiting
    # The frame is no suspect for whoever takes it next, but deadnode did not stop cleanly.
    assert (area / suspects.CLEAN_STOP_FILE).read_bytes() == suspects.HANDED_ON
    config = load_config(tmp_path / "config.toml")
    (seen,) = [item for item in collect_status(config).instances_seen if item.name == "deadnode"]
    assert instance_state(seen) == "gone"

    # deadnode comes back (the frame still in its area): its crash is counted, its frame is no
    # suspect, and what it leaves at its own clean stop is its own mark.
    away.rename(processed)
    again = _start_named(tmp_path / "config.toml", "deadnode")
    try:
        wait_for(lambda: files_under(processed) == ["x.bmp"], what="deadnode's move of its frame")
    finally:
        _stop_cleanly(again)
    assert query(database, "SELECT crashes FROM instances WHERE name = 'deadnode'") == [(1,)]
    assert caplog.text.count("by a run that crashed") == 1, caplog.text  # the first adoption's
    assert (area / suspects.CLEAN_STOP_FILE).read_bytes() == b""


def test_a_clean_stop_whose_last_heartbeat_was_lost_stays_clean_after_an_adopter_empties_its_area(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # Found by review: the adopter took the mark, finished the frames and removed the area with
    # it, and the instance's row, which its `stopped` beat never reached, said it died.
    config_path = make_config(inbox=_RESCANNING)
    config = load_config(config_path)
    database = tmp_path / "data" / "results.sqlite3"
    database.parent.mkdir()
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=10_000)
    upgrade_to_head(engine)
    now = datetime.now(UTC)
    # node stopped cleanly with a frame left claimed (its batch waited for the database), whose
    # last heartbeat, `stopped`, never arrived.
    record_beat(engine, Beat("node", "here", 1, "running", now, now, 1, 0, 0, 0.0, None))
    engine.dispose()
    with _dying_instance(tmp_path, instance="node") as node_area:
        suspects.mark_clean_stop(node_area)
    other = _start_named(config_path, "other")
    try:
        wait_for(lambda: files_under(tmp_path / "processed") == ["x.bmp"], what="the adopter's move")
        wait_for(lambda: not node_area.exists(), what="node's area to go")

        def node_state() -> str:
            (seen,) = [item for item in collect_status(config).instances_seen if item.name == "node"]
            return instance_state(seen)

        # Its lock, held by the adopter, goes just after its area ("running" until then); without
        # the fix it is "gone" from then on, never "stopped".
        wait_for(lambda: node_state() == "stopped", what="node to show as stopped")
    finally:
        _stop_cleanly(other)
    _stop_cleanly(_start_named(config_path, "node"))
    assert query(database, "SELECT crashes FROM instances WHERE name = 'node'") == [(0,)]


def test_a_suspect_raised_for_its_last_try_goes_back_where_no_clean_stop_mark_can_be_made(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: out of inodes, a count is raised in place (no new file) but the clean
    # stop's mark cannot be made; taking the area for marked, the stop left the count raised, and
    # the next start failed the frame as a crasher after two crashes.
    config_path = make_config(inbox=_RESCANNING)
    inbox = tmp_path / "inbox"
    mount_tmpfs(inbox, size="8m,nr_inodes=64")
    try:
        lock = acquire_instance(inbox / ".in-progress", name="node")
        write_bmp(inbox / "x.bmp")
        frame = claim(inbox, lock.area, PurePosixPath("x.bmp"))
        assert frame is not None
        record_attempt(frame, MAX_CRASHES - 1)  # two crashes so far
        lock.release()
        fillers = inbox / ".filler"
        fillers.mkdir()
        with pytest.raises(OSError) as full:
            for number in range(100):
                (fillers / str(number)).touch()
        assert full.value.errno == errno.ENOSPC

        record, away = Recorder.record, threading.Event()
        away.set()

        def database_away(self: Recorder, classified: list[Classified]) -> list[Stored]:
            if away.is_set():
                raise StorageUnavailable("database is locked")
            return record(self, classified)

        monkeypatch.setattr(Recorder, "record", database_away)
        first = _start_named(config_path, "node")
        wait_for(lambda: first.daemon.parked_frames == 1, what="its row to wait for the database")
        assert crashes_survived(frame) == MAX_CRASHES, "raised in place for its last lone try"
        _stop_cleanly(first)  # no crash came of that try
        assert not (lock.area / suspects.CLEAN_STOP_FILE).exists()
        assert crashes_survived(frame) == MAX_CRASHES - 1, "the try crashed nothing: put back"

        for filler in fillers.iterdir():
            filler.unlink()
        away.clear()
        again = _start_named(config_path, "node")
        try:
            wait_for(lambda: files_under(tmp_path / "processed") == ["x.bmp"], what="its move")
        finally:
            _stop_cleanly(again)
        rows = query(tmp_path / "data" / "results.sqlite3", "SELECT status, error FROM results")
        assert rows == [("ok", None)], "tried alone a last time, not failed unopened"
    finally:
        subprocess.run(["umount", "-l", str(inbox)], check=False)


@pytest.mark.parametrize("stopped", ["crashed", "cleanly"])
def test_an_orphan_whose_adoption_was_cut_short_is_left_to_the_next_adopter_as_its_instance_left_it(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture, stopped: str
) -> None:
    first, processed, away = _running_without_processed(start_daemon, tmp_path, caplog)
    # Three claims, taken in the order recovery takes them: the first is processed (alone after
    # a crash) and waits for processed/; the second's row was committed before the instance
    # died, so it only needs its move, and that move finding processed/ away stops the adoption
    # there; the third is never reached.
    with _dying_instance(tmp_path, ("a.bmp", "b.bmp", "c.bmp")) as area:
        reached, committed, unreached = claimed_frames(area)
        now = datetime.now(UTC)
        row = ResultRecord(
            frame_key=committed.key,
            source_path=committed.relative.as_posix(),
            stored_path=str(processed / committed.relative),  # where the daemon would move it
            received_at=now,
            processed_at=now,
            status="ok",
        )
        database = tmp_path / "data" / "results.sqlite3"
        engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=10_000)
        assert writes.insert_new(engine, [row]).inserted == {committed.key}
        engine.dispose()
        if stopped == "cleanly":
            (area / ".clean-stop").touch()
    first.daemon.wake()
    wait_for(
        lambda: "cannot adopt instance deadnode's frames yet" in caplog.text, what="the cut-short adoption"
    )
    # While its frames are ours, a death of ours among them would be a crash in their area.
    assert not (area / ".clean-stop").exists()

    _stop_cleanly(first)  # with the first frame adopted and still waiting
    # Our clean stop says nothing of frames we never reached: the area is as its instance left it.
    assert (area / ".clean-stop").exists() == (stopped == "cleanly")
    # Nor did our attempt at the first frame crash anything: its count is as the crash left it.
    assert crashes_survived(reached) == 1
    away.rename(processed)
    start_daemon(inbox=_RESCANNING)

    names = sorted(frame.relative.name for frame in (reached, committed, unreached))
    wait_for(lambda: files_under(processed) == names, what="the next adopter's moves")
    # After a crash, the next adopter took them as a crash's leftovers too.
    assert caplog.text.count("by a run that crashed") == (2 if stopped == "crashed" else 0), caplog.text
    rows = query(database, "SELECT source_path, stored_path FROM results ORDER BY source_path")
    assert rows == [(name, str(processed / name)) for name in names]


@pytest.mark.parametrize("restarted", [False, True], ids=["retried", "after a clean stop"])
@pytest.mark.parametrize(
    ("crashes", "markable"),
    [(MAX_CRASHES, True), (MAX_CRASHES - 1, True), (MAX_CRASHES, False)],
    ids=["a crasher", "its last try", "a crasher whose mark cannot be written"],
)
def test_a_suspect_whose_row_waited_for_the_database_keeps_its_fate(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    crashes: int,
    markable: bool,
    restarted: bool,
) -> None:
    # In progress during three crashes, it is failed unopened; during two, it is tried alone a
    # last time, its count raised to three first. Either way its row waits (the database away),
    # and the frame is tried again, in the same run or the next: taken for an ordinary frame,
    # the crasher was opened in a batch; taken for a crasher by its count, the frame on its last
    # try, which had crashed nothing, was failed unopened. Where the crasher's mark cannot be
    # written (its area turned read-only, say), it must still never be opened.
    if not markable:
        counted = suspects.record_attempt

        def unwritable_mark(frame: ClaimedFrame, count: int) -> None:
            if count == suspects.FAILED_UNOPENED:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            counted(frame, count)

        monkeypatch.setattr(suspects, "record_attempt", unwritable_mark)
    record, batches, away = Recorder.record, [], threading.Event()
    away.set()

    def database_away_once(self: Recorder, classified: list[Classified]) -> list[Stored]:
        batches.append([item.frame.relative.name for item in classified])
        if away.is_set():
            if not restarted:
                away.clear()  # back for the retry
            raise StorageUnavailable("database is locked")
        return record(self, classified)

    monkeypatch.setattr(Recorder, "record", database_away_once)
    first = start_daemon(inbox=_RESCANNING)
    wait_for(lambda: first.daemon.turns > 0, what="the loop to start")
    with _dying_instance(tmp_path) as area:
        (frame,) = claimed_frames(area)
        record_attempt(frame, crashes)
    if restarted:
        wait_for(lambda: first.daemon.parked_frames == 1, what="its row to wait for the database")
        _stop_cleanly(first)
        away.clear()
        start_daemon(inbox=_RESCANNING)

    crasher = crashes == MAX_CRASHES
    folder = tmp_path / ("failed" if crasher else "processed")
    wait_for(lambda: files_under(folder) == ["x.bmp"], what="its move")
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT status, error FROM results")
    assert rows == ([("failed", crash_reason())] if crasher else [("ok", None)])
    assert batches == [["x.bmp"], ["x.bmp"]], "alone each time"


def test_live_instances_of_an_inbox_moved_away_and_made_again_never_adopt_each_other(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `mv inbox inbox.old && mkdir inbox` while two daemons run: their locks went with the old
    # inbox. Each made its area again in the new one at its next claim, lockless, and the other
    # took it at its next rescan for a dead instance's: frames in flight processed again as a
    # crash's suspects, counted by both daemons.
    caplog.set_level(logging.INFO)
    batches = {"size": 64, "max_wait_ms": 300}
    daemons = [start_daemon(inbox=_RESCANNING, batch=batches) for _ in range(2)]
    for running in daemons:
        running.turns_from_now(1)
    inbox = tmp_path / "inbox"
    inbox.rename(tmp_path / "inbox.old")
    inbox.mkdir()
    for index in range(6):
        write_bmp(inbox / "cam" / f"{index}.bmp", seed=index)

    database = tmp_path / "data" / "results.sqlite3"
    wait_for(lambda: query(database, "SELECT count(*) FROM results")[0][0] == 6, what="6 rows")
    wait_for(lambda: files_under(inbox) == [], what="the inbox drained")
    for running in daemons:
        running.turns_from_now(5)  # rescans, where another instance's area would be adopted

    assert "which is gone" not in caplog.text and "by a run that crashed" not in caplog.text
    assert sum(running.daemon.report.ok for running in daemons) == 6
    names = {running.daemon.instance.name for running in daemons}
    assert {path.name for path in (inbox / ".in-progress").glob("*.lock")} == {
        f"{name}.lock" for name in names
    }


def test_an_instance_whose_lock_went_takes_it_again_unless_another_has_the_name(tmp_path: Path) -> None:
    root = tmp_path / "inbox" / ".in-progress"
    held = acquire_instance(root, name="a")
    (tmp_path / "inbox").rename(tmp_path / "inbox.old")
    (tmp_path / "inbox").mkdir()
    held.keep()
    with pytest.raises(StartupError):
        acquire_instance(root, name="a")  # held again, in the new inbox
    assert (root / "a").is_dir()

    shutil.rmtree(root)  # `.in-progress` removed by hand, and a daemon started meanwhile as `a`
    other = acquire_instance(root, name="a")
    with pytest.raises(StartupError, match="lost its lock"):
        held.keep()
    other.release()
    held.release()


def test_a_committed_row_whose_stored_path_is_relative_moves_its_frame_into_processed_not_the_cwd(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon writes absolute paths; a relative one (a hand-edited or foreign database) was
    taken from the daemon's working folder: the frame moved there, out of processed/ and failed/."""
    caplog.set_level(logging.WARNING, logger="watcher.pipeline.processing")
    cwd = tmp_path / "where-the-daemon-runs"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    start_daemon(inbox=_RESCANNING)  # its database migrated
    database = tmp_path / "data" / "results.sqlite3"
    with _dying_instance(tmp_path, ("cam-01/x.bmp",)) as area:
        (committed,) = claimed_frames(area)
        now = datetime.now(UTC)
        row = ResultRecord(
            frame_key=committed.key,
            source_path="cam-01/x.bmp",
            stored_path="cam-01/x.bmp",  # relative
            received_at=now,
            processed_at=now,
            status="ok",
        )
        engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=10_000)
        assert writes.insert_new(engine, [row]).inserted == {committed.key}
        engine.dispose()

    processed = tmp_path / "processed"
    wait_for(lambda: files_under(processed) == ["cam-01/x.bmp"], what="the adopted frame's move")
    assert files_under(cwd) == []
    rows = query(database, "SELECT source_path, stored_path FROM results")
    assert rows == [("cam-01/x.bmp", str(processed / "cam-01" / "x.bmp"))]
    assert "its row's stored_path 'cam-01/x.bmp' is not absolute" in caplog.text
