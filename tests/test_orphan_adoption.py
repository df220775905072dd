"""A dead instance's frames are adopted once: while they wait (an output folder away), later
rescans neither adopt them again (a frame counted twice, its crash count raised until it fails
unopened) nor let another instance take them; once they are moved, its lock and area go."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, query, wait_for
from watcher.intake.claiming import claim
from watcher.service.instance import acquire_instance, orphaned_instances


def _dead_instance_with_a_claim(tmp_path: Path) -> Path:
    """`deadnode`'s area, one frame claimed into it, as a run that crashed leaves it (no lock
    held, no clean-stop mark)."""
    staging = tmp_path / "staging"
    write_bmp(staging / "x.bmp")
    area = tmp_path / "inbox" / ".in-progress" / "deadnode"
    area.mkdir(parents=True)
    assert claim(staging, area, PurePosixPath("x.bmp")) is not None
    return area


def test_an_orphans_frame_waiting_for_its_output_folder_is_adopted_once(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watcher.pipeline.recovery")
    running = start_daemon(inbox={"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0})
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
    # Its lock is let go once its frames are done: the name can be taken again.
    acquire_instance(area.parent, name="deadnode").release()


def test_an_orphans_frame_still_waiting_at_a_clean_stop_is_no_suspect_for_the_next_adopter(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="watcher.pipeline.recovery")
    first = start_daemon(inbox={"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0})
    processed = tmp_path / "processed"
    away = first.take_away(processed, caplog)
    area = _dead_instance_with_a_claim(tmp_path)
    wait_for(lambda: first.daemon.parked_frames == 1, what="the orphan's frame to wait for processed/")

    first.stop.set()  # a clean stop (SIGTERM) with the adopted frame still waiting
    first.daemon.wake()
    first.thread.join(timeout=30)
    assert not first.thread.is_alive()
    away.rename(processed)
    start_daemon(inbox={"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0})

    wait_for(lambda: files_under(processed) == ["x.bmp"], what="the next adopter's move")
    # The dead instance's crash made it a suspect once; the clean stop after it did not.
    assert caplog.text.count("by a run that crashed") == 1, caplog.text
    assert not area.exists() or not list(area.glob(".attempts*"))
