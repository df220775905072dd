"""Exporters' hour and day folders left empty are removed by the daemon's rescans, once they have
stayed empty for `inbox.remove_empty_folders_after_s`; never the inbox, a camera's own folder, a
folder with anything in it, nor anything under an archive a backfill reads."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, mount_tmpfs, wait_for
from watcher.intake.discovery import scan_inbox
from watcher.intake.empty_folders import EmptyFolders

DAY_S = 86_400.0


class _Clock:
    """The daemon's own clock, moved on by hand: how long its rescans have seen a folder empty."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _scanned_a_day_apart(inbox: Path, empty: EmptyFolders, clock: _Clock) -> list[PurePosixPath]:
    """Two rescans a day apart by the daemon's clock (the first only sees); the second's names."""
    list(scan_inbox(inbox, empty=empty))
    clock.now += DAY_S
    return list(scan_inbox(inbox, empty=empty))


def _made_empty(folder: Path, *, seconds_ago: float) -> Path:
    folder.mkdir(parents=True)
    then = time.time() - seconds_ago
    os.utime(folder, (then, then))
    return folder


def test_a_rescan_removes_only_deep_folders_empty_for_long_enough(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    stale = _made_empty(inbox / "cam-07" / "2026-11-28" / "13", seconds_ago=2 * DAY_S)
    recent = _made_empty(inbox / "cam-07" / "2026-11-29" / "13", seconds_ago=60)
    camera = _made_empty(inbox / "cam-quiet", seconds_ago=2 * DAY_S)
    written = write_bmp(inbox / "cam-07" / "2026-11-28" / "14" / "x.bmp")
    os.utime(written.parent, (time.time() - 2 * DAY_S,) * 2)
    hidden = _made_empty(inbox / "cam-07" / ".thumbnails" / "old", seconds_ago=2 * DAY_S)
    clock = _Clock()
    empty = EmptyFolders(after_s=DAY_S, clock=clock)

    found = _scanned_a_day_apart(inbox, empty, clock)

    assert [str(name) for name in found] == ["cam-07/2026-11-28/14/x.bmp"]
    assert not stale.exists()
    assert stale.parent.is_dir(), "its day folder was not empty when listed: it stays until it has been"
    assert recent.is_dir() and camera.is_dir() and written.is_file() and hidden.is_dir()
    assert empty.removed == 1


def test_a_scan_without_it_removes_nothing(tmp_path: Path) -> None:
    """As a backfill's scan of an archive, and `status`'s count: they never write there."""
    stale = _made_empty(tmp_path / "archive" / "cam-07" / "2019" / "01", seconds_ago=400 * DAY_S)
    assert list(scan_inbox(tmp_path / "archive")) == []
    assert stale.is_dir()


def test_a_folder_swapped_for_a_link_mid_scan_takes_nothing_outside_the_inbox(tmp_path: Path) -> None:
    """A writer in the inbox swaps a day folder for a link while the scan is inside it: the hour
    folder listed below it next is wherever the link points, and only the inbox's may go."""
    inbox = tmp_path / "inbox"
    day = inbox / "cam-07" / "2026-11-28"
    _made_empty(day / "13", seconds_ago=2 * DAY_S)
    write_bmp(day / "x.bmp")
    outside = _made_empty(tmp_path / "elsewhere" / "13", seconds_ago=2 * DAY_S)
    empty = EmptyFolders(after_s=DAY_S)

    for name in scan_inbox(inbox, empty=empty):
        if name == PurePosixPath("cam-07/2026-11-28/x.bmp"):  # listed: its `13` is next
            day.rename(day.with_name("moved"))
            day.symlink_to(outside.parent)

    assert outside.is_dir(), "a folder outside the inbox was removed through a link"
    assert empty.removed == 0


def test_an_old_empty_folder_goes_only_once_the_daemon_has_seen_it_empty_that_long(tmp_path: Path) -> None:
    """An unmounted share's mount point is an empty folder with an old time: it goes only once it
    has stayed so for the whole limit by the daemon's own rescans, and a frame written into it
    meanwhile starts that again."""
    inbox = tmp_path / "inbox"
    mount_point = _made_empty(inbox / "site" / "nvr-1", seconds_ago=30 * DAY_S)
    clock = _Clock()
    empty = EmptyFolders(after_s=DAY_S, clock=clock)

    for clock.now in (0.0, DAY_S - 1):
        assert list(scan_inbox(inbox, empty=empty)) == []
        assert mount_point.is_dir(), f"removed {clock.now} s after the daemon first saw it empty"
    frame = write_bmp(mount_point / "x.bmp")
    clock.now = DAY_S + 1
    assert list(scan_inbox(inbox, empty=empty)) == [PurePosixPath("site/nvr-1/x.bmp")]
    frame.unlink()  # claimed
    os.utime(mount_point, (time.time() - 30 * DAY_S,) * 2)
    for clock.now in (DAY_S + 2, 2 * DAY_S + 1):
        list(scan_inbox(inbox, empty=empty))
        assert mount_point.is_dir(), "the frame written into it started its day again"
    clock.now = 2 * DAY_S + 2
    list(scan_inbox(inbox, empty=empty))
    assert not mount_point.exists()
    assert empty.removed == 1


def test_a_scan_spends_only_so_long_removing_and_the_next_scans_go_on(tmp_path: Path) -> None:
    """Months of hour folders found at once must not hold the daemon's loop for as long as the
    filesystem takes to remove them all: each scan removes what its time allows (here, the
    least: one), and the rest go at the next scans."""
    inbox = tmp_path / "inbox"
    hours = [
        _made_empty(inbox / "cam-07" / "2026-11-28" / f"{hour:02}", seconds_ago=2 * DAY_S)
        for hour in range(5)
    ]
    clock = _Clock()
    empty = EmptyFolders(after_s=DAY_S, removing_s=0.0, clock=clock)
    list(scan_inbox(inbox, empty=empty))  # seen empty from now on
    clock.now += DAY_S

    for scan in range(1, 6):
        list(scan_inbox(inbox, empty=empty))
        assert empty.removed == scan
        assert sum(hour.exists() for hour in hours) == 5 - scan
    assert (inbox / "cam-07" / "2026-11-28").is_dir(), "emptied just now: it waits its own day"


@pytest.mark.parametrize("stays", ["touched", "mount point"])
def test_folders_that_stay_do_not_spend_every_scans_time(tmp_path: Path, stays: str) -> None:
    """An empty folder that the daemon has long seen empty but that stays (its time says it was
    written into lately, or it is a mount point: EBUSY) was looked at again first at every scan,
    spending its time: with enough of them, the old folders after them never went."""
    inbox = tmp_path / "inbox"
    old = _made_empty(inbox / "cam-07" / "a", seconds_ago=2 * DAY_S)
    staying = _made_empty(inbox / "cam-07" / "b", seconds_ago=60 if stays == "touched" else 2 * DAY_S)
    if stays == "mount point":
        mount_tmpfs(staying, size="1M")
        os.utime(staying, (time.time() - 2 * DAY_S,) * 2)
    try:
        clock = _Clock()
        empty = EmptyFolders(after_s=DAY_S, removing_s=0.0, clock=clock)  # one folder a scan
        list(scan_inbox(inbox, empty=empty))
        for clock.now in (DAY_S, DAY_S + 1, DAY_S + 2):
            list(scan_inbox(inbox, empty=empty))  # `b` comes first in a scan
        assert not old.exists(), "the folder after one that stays was never reached"
        assert staying.is_dir()
    finally:
        if stays == "mount point":
            subprocess.run(["umount", "-l", str(staying)], check=False)


def test_a_scan_says_what_it_removed_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Months of folders removed at once are one line of the log, not one each: journald's rate
    limit would otherwise drop the daemon's other lines with them."""
    inbox = tmp_path / "inbox"
    for day in range(1, 31):
        _made_empty(inbox / "cam-07" / f"2026-11-{day:02}", seconds_ago=2 * DAY_S)
    caplog.set_level(logging.INFO, logger="watcher.intake.empty_folders")

    clock = _Clock()
    _scanned_a_day_apart(inbox, EmptyFolders(after_s=DAY_S, clock=clock), clock)

    assert [record.getMessage() for record in caplog.records] == [
        "removed cam-07/2026-11-30 and 29 others: empty for over 86400 s"
    ]


@settings(max_examples=30, deadline=None)
@given(depth=st.integers(min_value=1, max_value=6), empty_for=st.floats(min_value=0, max_value=3 * DAY_S))
def test_whatever_the_depth_and_age_only_a_deep_folder_past_the_limit_goes(
    tmp_path_factory: pytest.TempPathFactory, depth: int, empty_for: float
) -> None:
    inbox = tmp_path_factory.mktemp("inbox")  # a fresh one each example
    folder = _made_empty(inbox.joinpath(*(f"level-{level}" for level in range(depth))), seconds_ago=empty_for)

    clock = _Clock()
    _scanned_a_day_apart(inbox, EmptyFolders(after_s=DAY_S, clock=clock), clock)

    should_go = depth >= 2 and empty_for >= DAY_S + 1  # a second's margin for the scan's own time
    should_stay = depth < 2 or empty_for < DAY_S - 1
    if should_go:
        assert not folder.exists()
    if should_stay:
        assert folder.is_dir()
    assert (inbox / "level-0").is_dir(), "a camera's own folder stays"


def test_the_daemon_removes_an_hour_folder_it_emptied_and_keeps_the_camera(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    hour = tmp_path / "inbox" / "cam-07" / "2026-11-29" / "13"
    write_bmp(hour / "a.bmp", seed=1)
    write_bmp(hour / "b.bmp", seed=2)
    running = start_daemon(inbox={"remove_empty_folders_after_s": 0.2, "rescan_interval_s": 0.1})

    wait_for(lambda: len(list((tmp_path / "processed").rglob("*.bmp"))) == 2, what="both frames moved")
    wait_for(lambda: not hour.exists(), what="the emptied hour folder to go")
    wait_for(lambda: not hour.parent.exists(), what="the day folder, empty since, to go")
    running.turns_from_now(3)
    assert (tmp_path / "inbox" / "cam-07").is_dir(), "a camera's own folder stays"
    assert (tmp_path / "inbox").is_dir()


def test_by_default_the_daemon_keeps_every_folder(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    hour = tmp_path / "inbox" / "cam-07" / "2026-11-29" / "13"
    write_bmp(hour / "a.bmp", seed=1)
    running = start_daemon(inbox={"rescan_interval_s": 0.05})

    wait_for(lambda: len(list((tmp_path / "processed").rglob("*.bmp"))) == 1, what="the frame moved")
    os.utime(hour, (time.time() - 400 * DAY_S,) * 2)
    running.turns_from_now(5)
    assert hour.is_dir()
