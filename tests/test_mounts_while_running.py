"""While the daemon runs, a site folder under another mount point than at start counts as missing:
a share unmounted from processed/ (or the inbox) itself leaves its mount point, an empty folder
on the local disk, where moved frames would be hidden once the share is back. Real tmpfs mounts
(as root) for the shares; the mount table is faked only where a real one cannot show it (none to
read)."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, mount_tmpfs, query, wait_for
from watcher.intake import site_mounts
from watcher.intake.folder_mounts import MountChange
from watcher.intake.mounts import Mount, mount_of
from watcher.intake.site_mounts import SiteMounts, identity_of

FRAMES = [f"cam/{index}.bmp" for index in range(3)]
EVENTS = {"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0}


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Folders the test mounts tmpfs on (mount_tmpfs), each unmounted (lazily, as often as it was
    mounted) at teardown."""
    mounted: list[Path] = []
    yield mounted
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def _mount(mounted: list[Path], folder: Path) -> int:
    """A fresh tmpfs at `folder`; its device number."""
    mount_tmpfs(folder, size="4m")
    mounted.append(folder)
    return os.stat(folder).st_dev


def _mount_with_a_new_device(mounted: list[Path], folder: Path, *, spare: Path) -> int:
    """A fresh tmpfs at `folder` on another device number than the one just unmounted there (the
    kernel hands the lowest free number out again: another tmpfs takes it first)."""
    _mount(mounted, spare)
    return _mount(mounted, folder)


def _rows(tmp_path: Path) -> list[tuple[str, str]]:
    database = tmp_path / "data" / "results.sqlite3"
    return sorted(query(database, "SELECT source_path, stored_path FROM results"))


def _write_frames(inbox: Path) -> None:
    for index, name in enumerate(FRAMES):
        write_bmp(inbox / name, seed=index)


def test_processed_unmounted_while_running_waits_and_its_frames_move_once_it_is_back(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    mounts: list[Path],
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    processed, inbox = tmp_path / "processed", tmp_path / "inbox"
    before = _mount(mounts, processed)
    running = start_daemon(inbox=EVENTS)
    write_bmp(inbox / "first.bmp")
    wait_for(lambda: files_under(processed) == ["first.bmp"], what="a frame moved onto the share")

    subprocess.run(["umount", str(processed)], check=True)  # nothing is held open there
    running.daemon.wake()
    notice = f"paths.processed {processed} is under the mount point "
    wait_for(lambda: notice in caplog.text, what="the daemon to notice")
    _write_frames(inbox)
    running.turns_from_now(5)

    assert files_under(processed) == [], "frames moved onto the local disk, under the mount point"
    assert files_under(inbox) == FRAMES  # waiting, as for a folder gone
    assert running.daemon.parked_frames == 0
    assert caplog.text.count(notice) == 1
    now = mount_of(processed)
    assert now is not None
    # The sentence a start and `status` say it with (MountChange.described).
    assert (
        f"{notice}{now.point} ({now.fstype}), not {processed} (tmpfs) as recorded (unmounted?): "
        "waiting for it to return"
    ) in caplog.text

    assert _mount_with_a_new_device(mounts, processed, spare=tmp_path / "spare") != before
    wait_for(lambda: files_under(processed) == FRAMES, what="the frames moved onto the share")
    assert _rows(tmp_path) == sorted(
        [("first.bmp", str(processed / "first.bmp"))] + [(name, str(processed / name)) for name in FRAMES]
    )
    wait_for(lambda: files_under(inbox) == [], what="the claims released")
    assert "folders are back: resuming" in caplog.text


def test_processed_unmounted_after_a_commit_finishes_the_moves_once_it_is_back(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    mounts: list[Path], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    from watcher.pipeline import processing

    processed, inbox = tmp_path / "processed", tmp_path / "inbox"
    _mount(mounts, processed)
    unmounted: list[bool] = []

    def unmount_after_the_commit(step: str) -> None:
        if step == "committed" and not unmounted:
            # Rows committed, the files still in the in-progress area: the share goes.
            subprocess.run(["umount", str(processed)], check=True)
            unmounted.append(True)

    monkeypatch.setattr(processing, "kill_point", unmount_after_the_commit)
    _write_frames(inbox)  # before the start: one batch of three
    running = start_daemon(inbox=EVENTS)
    daemon = running.daemon
    wait_for(lambda: daemon.parked_frames == 3, what="the committed batch to wait for processed/")
    running.turns_from_now(5)

    assert files_under(processed) == [], "frames moved onto the local disk, under the mount point"
    assert _rows(tmp_path) == [(name, str(processed / name)) for name in FRAMES]  # committed
    assert daemon.parked_frames == 3
    now = mount_of(processed)
    assert now is not None
    assert (
        f"cannot store a batch of 3 frames ([Errno 2] paths.processed {processed} is under the mount "
        f"point {now.point} ({now.fstype}), not {processed} (tmpfs) as recorded (unmounted?)"
    ) in caplog.text

    _mount(mounts, processed)
    daemon.wake()
    wait_for(lambda: files_under(processed) == FRAMES and daemon.parked_frames == 0, what="the moves")
    assert _rows(tmp_path) == [(name, str(processed / name)) for name in FRAMES]
    wait_for(lambda: files_under(inbox) == [], what="the claims released")


def test_a_share_mounted_again_at_the_same_point_stops_nothing(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    mounts: list[Path],
) -> None:  # fmt: skip
    # An NFS share or an automount mounted again at its point: another device number, same place.
    # Mounted over the one there, not unmounted first: in between, it would be away, and rightly
    # waited for.
    processed, inbox = tmp_path / "processed", tmp_path / "inbox"
    before = _mount(mounts, processed)
    running = start_daemon(inbox=EVENTS)
    write_bmp(inbox / "first.bmp")
    wait_for(lambda: files_under(processed) == ["first.bmp"], what="a frame moved onto the share")

    assert _mount(mounts, processed) != before
    _write_frames(inbox)

    wait_for(lambda: files_under(processed) == FRAMES, what="the frames moved onto the share")
    assert running.daemon.parked_frames == 0
    assert "unmounted?" not in caplog.text and "waiting" not in caplog.text


def test_an_inbox_unmounted_while_running_is_left_as_an_inbox_gone(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    mounts: list[Path],
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    inbox, processed = tmp_path / "inbox", tmp_path / "processed"
    _mount(mounts, inbox)
    running = start_daemon(inbox=EVENTS)
    write_bmp(inbox / "first.bmp")
    wait_for(lambda: files_under(processed) == ["first.bmp"], what="a frame from the share")

    # The daemon holds its instance's lock open on the share: only a lazy unmount lets it go.
    subprocess.run(["umount", "-l", str(inbox)], check=True)
    running.daemon.wake()
    notice = f"paths.inbox {inbox} is under the mount point "
    wait_for(lambda: notice in caplog.text, what="the daemon to notice")
    write_bmp(inbox / "cam" / "local.bmp")  # on the local disk, under the mount point
    running.turns_from_now(5)
    running.daemon.wake()  # a rescan due at once, as an event asks for one
    running.turns_from_now(5)

    assert not (inbox / ".in-progress").exists(), "the instance's area made on the local disk"
    assert files_under(inbox) == ["cam/local.bmp"] and files_under(processed) == ["first.bmp"]
    assert caplog.text.count(notice) == 1
    assert running.thread.is_alive()


def test_another_share_above_processed_with_its_device_number_is_no_return(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    mounts: list[Path],
) -> None:  # fmt: skip
    # The share at share/processed goes; another one mounted at share/ (the folder above) gets
    # the device number just freed (the kernel hands the lowest free one out), and a processed/
    # is made on it: not the share the daemon started on, though the device number says so.
    share, inbox = tmp_path / "share", tmp_path / "inbox"
    processed = share / "processed"
    before = _mount(mounts, processed)
    running = start_daemon(inbox=EVENTS, paths={"processed": str(processed)})
    write_bmp(inbox / "first.bmp")
    wait_for(lambda: files_under(processed) == ["first.bmp"], what="a frame moved onto the share")
    subprocess.run(["umount", str(processed)], check=True)
    running.daemon.wake()
    notice = f"paths.processed {processed} is under the mount point "
    wait_for(lambda: notice in caplog.text, what="the daemon to notice")

    if _mount(mounts, share) != before:
        pytest.skip("the kernel handed another device number out: nothing to mistake")
    processed.mkdir()
    _write_frames(inbox)
    running.turns_from_now(5)
    running.daemon.wake()
    running.turns_from_now(5)

    assert files_under(share) == [], "frames moved onto another share than the one at start"
    assert files_under(inbox) == FRAMES


# -- the look itself -------------------------------------------------------------------------------


def test_the_mount_table_is_read_only_when_the_device_or_inode_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "processed"
    folder.mkdir()
    here = mount_of(folder)
    assert here is not None
    readings: list[Path] = []

    def counted(path: Path, **kwargs: Path) -> object:
        readings.append(path)
        return mount_of(path, **kwargs)

    monkeypatch.setattr(site_mounts, "mount_of", counted)
    mounts = SiteMounts({("paths.processed", folder): here})
    device, inode = identity_of(os.stat(folder))

    for _ in range(100):  # a batch each
        assert mounts.elsewhere(folder, (device, inode)) is None
    assert len(readings) == 1
    assert mounts.elsewhere(folder, (device + 1, inode)) is None  # a device not seen there: read again
    assert len(readings) == 2
    assert mounts.elsewhere(folder, (device, inode + 1)) is None  # nor an inode
    assert len(readings) == 3


def test_a_folder_under_another_point_is_elsewhere_unless_there_is_no_mount_table(tmp_path: Path) -> None:
    # A mount table that cannot be read is faked (a missing file): a real one always can be.
    folder = tmp_path / "processed"
    folder.mkdir()
    here = mount_of(folder)
    assert here is not None
    start = {("paths.processed", folder): Mount(tmp_path / "the share", "nfs4")}
    seen = identity_of(os.stat(folder))

    moved = SiteMounts(start).elsewhere(folder, seen)
    unknown = SiteMounts(start, mountinfo=tmp_path / "no mountinfo").elsewhere(folder, seen)

    assert moved == MountChange("paths.processed", folder, Mount(tmp_path / "the share", "nfs4"), here)
    assert unknown is None  # as before mounts were watched
    assert SiteMounts().elsewhere(folder, seen) is None  # no folder known: no start to compare
