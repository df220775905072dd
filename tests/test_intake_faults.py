"""Discovery and storage faults: polling, network filesystems, a vanishing inbox, a locked
database, long names."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from sqlalchemy.exc import OperationalError

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, mount_tmpfs, query, wait_for
from watcher.intake.mounts import filesystem_type, needs_polling
from watcher.intake.moving import move_no_clobber, reserve_destination
from watcher.pipeline.backoff import is_transient
from watcher.store.errors import StorageError, translate


def _rows(tmp_path: Path) -> int:
    return query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results")[0][0]


def test_poll_mode_finds_frames_without_events(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    daemon = start_daemon(inbox={"mode": "poll", "poll_scan_s": 0.2, "settle_ms": 0}).daemon
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    for index in range(3):
        write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", seed=index)
    wait_for(lambda: _rows(tmp_path) == 3, what="3 rows from polling")


MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /mnt/share rw,relatime shared:2 - nfs4 server:/export rw,vers=4.2
41 40 0:36 / /mnt/share/local rw,relatime shared:3 - tmpfs tmpfs rw
42 22 0:37 / /mnt/with\\040space rw - cifs //host/share rw
43 22 0:38 / /mnt/sshfs rw - fuse.sshfs host: rw
"""


@pytest.mark.parametrize(
    ("folder", "fstype", "poll"),
    [
        pytest.param("/var/lib/cctv/inbox", "ext4", False, id="local_disk"),
        pytest.param("/mnt/share/cameras/inbox", "nfs4", True, id="nfs"),
        pytest.param("/mnt/share/local/inbox", "tmpfs", False, id="deeper_local_mount"),
        pytest.param("/mnt/with space/inbox", "cifs", True, id="cifs_escaped_name"),
        pytest.param("/mnt/sshfs/inbox", "fuse.sshfs", True, id="fuse"),
    ],
)
def test_network_filesystems_are_polled(tmp_path: Path, folder: str, fstype: str, poll: bool) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    assert filesystem_type(Path(folder), mountinfo=mountinfo) == fstype
    assert needs_polling(fstype) is poll


def test_the_real_mount_table_is_readable(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path) is not None


def test_a_vanished_inbox_is_waited_for_not_recreated(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_daemon(inbox={"rescan_interval_s": 0.2, "settle_ms": 0})
    daemon = running.daemon
    inbox = tmp_path / "inbox"
    away = running.take_away(inbox, caplog)
    turns = daemon.turns
    wait_for(lambda: daemon.turns > turns + 2, what="a few more turns")
    assert not inbox.exists(), "the daemon must not recreate a missing inbox"

    write_bmp(away / "cam-01" / "x.bmp")
    away.rename(inbox)  # and comes back, with a frame
    wait_for(lambda: _rows(tmp_path) == 1, what="the frame after the inbox returned")
    # The row is committed first, the move follows: wait for it rather than race it.
    wait_for(lambda: files_under(tmp_path / "processed") == ["cam-01/x.bmp"], what="the move to processed/")


def test_an_inbox_event_while_an_output_folder_is_missing_does_not_spin_the_loop(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A long rescan interval: the only wake-ups are the inbox's events.
    running = start_daemon(inbox={"mode": "events", "rescan_interval_s": 30, "settle_ms": 0})
    daemon = running.daemon
    processed = tmp_path / "processed"
    away = running.take_away(processed, caplog)

    write_bmp(tmp_path / "inbox" / "cam-01" / "x.bmp")  # an event sets the loop's wake-up
    turns = daemon.turns
    wait_for(lambda: daemon.turns > turns, what="the turn the event wakes")
    # Not a synchronisation but the window the loop is watched over: waiting for the folder, it
    # takes a turn per wake-up (a few here), never one after another on a wake-up left set.
    running.stop.wait(1.0)
    assert daemon.turns - turns <= 5, f"{daemon.turns - turns} turns in 1 s: the loop spins"

    away.rename(processed)  # and comes back
    daemon.wake()
    wait_for(lambda: files_under(processed) == ["cam-01/x.bmp"], what="the frame once processed/ returned")


def test_a_refusal_is_said_once_per_frame_and_forgotten_once_the_frame_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess

    from watcher.intake.readiness import ReadinessTracker
    from watcher.pipeline.claims import Claims

    inbox = tmp_path / "inbox"
    mount_tmpfs(inbox, size="16m")

    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(inbox)], check=True)

    try:
        area = inbox / ".in-progress" / "node"
        area.mkdir(parents=True)
        write_bmp(inbox / "cam" / "x.bmp")
        remount("ro")  # a read-only inbox: every claim is refused (EROFS)
        claims = Claims(
            inbox=inbox,
            area=area,
            readiness=ReadinessTracker(settle_s=0, timeout_s=60),
            stop=threading.Event(),
        )
        for _ in range(3):
            claims.rescan()
            claims.claim_ready(lambda _frame: None)
        assert caplog.text.count("stays in the inbox") == 1, "one refusal of one frame, said once"

        remount("rw")
        (inbox / "cam" / "x.bmp").unlink()  # an operator clears it away
        claims.rescan()
        write_bmp(inbox / "cam" / "x.bmp", seed=1)  # and the camera sends the name again
        remount("ro")
        claims.rescan()
        claims.claim_ready(lambda _frame: None)
        # A new frame, refused: said again (the old refusal forgotten with its frame, not kept
        # for every name a long refusal ever saw).
        assert caplog.text.count("stays in the inbox") == 2
    finally:
        subprocess.run(["umount", "-l", str(inbox)], check=False)


def test_a_locked_database_is_waited_out_and_nothing_moves_before_commit(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = start_daemon(database={"busy_timeout_ms": 100}, inbox={"settle_ms": 0}).daemon
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    # Another process takes the write lock and holds it.
    blocker = sqlite3.connect(tmp_path / "data" / "results.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for index in range(3):
            write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)
        wait_for(lambda: "cannot store a batch" in caplog.text, what="the commit to fail on the lock")
        assert files_under(tmp_path / "processed") == [], "no file may move before its row is committed"
        # The failed batch stays claimed; the rest waits in the inbox (nothing new is taken).
        assert len(files_under(tmp_path / "inbox")) == 3
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_for(lambda: _rows(tmp_path) == 3, timeout=60, what="the rows once the lock is gone")
    wait_for(lambda: len(files_under(tmp_path / "processed")) == 3, what="the moves after the commit")


def test_after_the_lock_refuses_a_batch_nothing_new_is_claimed_and_a_stop_does_not_try_each(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A backlog arriving while another process holds the write lock: each batch claimed went on to
    # wait out the busy timeout in turn, and a SIGTERM waited for all of them (256 frames in
    # batches of 8 at the default 10 s: a 161 s stop, against systemd's TimeoutStopSec=180).
    running = start_daemon(database={"busy_timeout_ms": 300}, batch={"size": 2}, model={"cpu_threads": 2})
    daemon = running.daemon
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    staged = tmp_path / "staged"
    for index in range(24):
        write_bmp(staged / f"{index}.bmp", seed=index)
    blocker = sqlite3.connect(tmp_path / "data" / "results.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        staged.rename(tmp_path / "inbox" / "cam-01")  # the whole backlog at once
        wait_for(lambda: "cannot store a batch" in caplog.text, what="the commit to fail on the lock")
        running.turns_from_now(3)
        running.stop.set()
        daemon.wake()
        running.thread.join(timeout=60)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert not running.thread.is_alive()
    tried = caplog.text.count("cannot store a batch")
    assert 1 <= tried <= 2, caplog.text  # the batches on the two lanes, none claimed after them
    # Those two and the batch that waited for a lane stay claimed; the rest were never taken.
    parked = daemon.report.left_parked
    assert 2 <= parked <= 8
    waiting = [name for name in files_under(tmp_path / "inbox") if name.startswith("cam-01/")]
    assert len(waiting) == 24 - parked and files_under(tmp_path / "processed") == []


def _operational(message: str) -> StorageError:
    # What the store's boundary makes of SQLite's error (see watcher.store.session).
    return translate(OperationalError("INSERT ...", {}, sqlite3.OperationalError(message)))


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        pytest.param(_operational("database is locked"), True, id="locked"),
        pytest.param(_operational("database or disk is full"), True, id="sqlite_full"),
        pytest.param(OSError(errno.ENOSPC, "No space left on device"), True, id="enospc"),
        pytest.param(_operational("disk I/O error"), False, id="io_error"),
        pytest.param(OSError(errno.EIO, "Input/output error"), False, id="eio"),
    ],
)
def test_which_storage_errors_are_waited_out(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_clash_on_a_very_long_name_still_fits(tmp_path: Path) -> None:
    name = "é" * 125 + ".bmp"  # 254 bytes: a suffix would overflow NAME_MAX
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_bytes(b"old")
    source = tmp_path / "new.bmp"
    source.write_bytes(b"new")

    destination = Path(reserve_destination(str(tmp_path / "out" / name), taken=set()))
    final = move_no_clobber(source, destination)

    assert len(final.name.encode()) <= 255 and final.name.endswith("-1.bmp")
    assert final.read_bytes() == b"new" and (tmp_path / "out" / name).read_bytes() == b"old"


def test_frames_vanishing_before_the_claim_are_skipped(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    from watcher.intake.claiming import claim

    (tmp_path / "area").mkdir()
    assert claim(tmp_path / "inbox", tmp_path / "area", PurePosixPath("gone.bmp")) is None
    assert list((tmp_path / "area").iterdir()) == []
    shutil.rmtree(tmp_path / "area")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs mounted at tmp_path/data: the database's disk, which the test fills."""
    import subprocess

    mount_point = tmp_path / "data"
    mount_tmpfs(mount_point, size="4m")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_pauses_intake_until_space_returns(
    start_daemon: Callable[..., RunningDaemon],
    small_disk: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    daemon = start_daemon(inbox={"settle_ms": 0}).daemon
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    filler = _fill(small_disk)
    for index in range(3):
        write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)

    wait_for(lambda: "disk is full" in caplog.text, timeout=30, what="the commit to fail on a full disk")
    assert files_under(tmp_path / "processed") == []
    assert len(files_under(tmp_path / "inbox")) == 3  # claimed or waiting, none lost

    filler.unlink()  # space returns
    wait_for(lambda: _rows(tmp_path) == 3, timeout=90, what="the rows once space is back")
    wait_for(lambda: len(files_under(tmp_path / "processed")) == 3, what="the moves")


def test_instances_take_distinct_names_and_a_named_one_is_exclusive(tmp_path: Path) -> None:
    from watcher.errors import StartupError
    from watcher.service.instance import acquire_instance, orphaned_instances

    first = acquire_instance(tmp_path, name=None)
    second = acquire_instance(tmp_path, name=None)
    named = acquire_instance(tmp_path, name="gpu-box")
    assert len({first.name, second.name, named.name}) == 3
    with pytest.raises(StartupError, match="instance 'gpu-box' is already running"):
        acquire_instance(tmp_path, name="gpu-box")
    with pytest.raises(StartupError, match="--instance '../x'"):
        acquire_instance(tmp_path, name="../x")

    assert list(orphaned_instances(tmp_path, own=first.name)) == []  # everyone else is alive
    second.release()  # as if its process died
    (orphan,) = orphaned_instances(tmp_path, own=first.name)
    assert orphan.name == second.name
    orphan.release()
    for lock in (first, named):
        lock.release()


def test_the_daemons_own_file_work_raises_no_events_and_frames_arriving_do(tmp_path: Path) -> None:
    """Looking at a frame, claiming it out of its folder and deleting one raise no event (each was
    once a second look); a claim holds nothing back; a frame written and
    closed, one renamed in from outside, one renamed from a temporary name inside its folder are
    hinted, the first marked finished, and a camera folder renamed inside the inbox is rescanned."""
    import time

    from watcher.intake.events import EventBatch, InboxEvents

    inbox = tmp_path / "inbox"
    camera = inbox / "cam-01"
    camera.mkdir(parents=True)
    looked, claimed, deleted = (
        write_bmp(camera / f"{name}.bmp") for name in ("looked", "claimed", "deleted")
    )
    (inbox / ".in-progress").mkdir()
    seen: list[EventBatch] = []
    events = InboxEvents(inbox, threading.Event())
    events.start()

    def seen_in(field: str, name: str, folder: str = "cam-01") -> bool:
        seen.append(events.take())
        return any(PurePosixPath(folder, name) in getattr(batch, field) for batch in seen)

    try:
        with looked.open("rb") as handle:  # as readiness reads a header, and a worker the frame
            handle.read()
        claimed.rename(inbox / ".in-progress" / "claimed.bmp")
        deleted.unlink()
        # Events arrive in order: once this one is in, any of the above would be too.
        written = time.monotonic()
        write_bmp(camera / "marker.bmp")
        wait_for(lambda: seen_in("finished", "marker.bmp"), timeout=30, what="the marker's close event")
        # watchdog (the earlier reader) held a rename out (the claim) for 0.5 s, and every event
        # behind it: a claim must hold nothing back (0.45 s leaves a loaded machine room).
        assert time.monotonic() - written < 0.45
        assert seen_in("hints", "marker.bmp")
        assert not any(
            batch.hints
            & {PurePosixPath("cam-01", name) for name in ("looked.bmp", "claimed.bmp", "deleted.bmp")}
            for batch in seen
        )

        (tmp_path / "outside.bmp").write_bytes(looked.read_bytes())
        (tmp_path / "outside.bmp").rename(camera / "renamed-in.bmp")
        wait_for(lambda: seen_in("hints", "renamed-in.bmp"), timeout=30, what="the renamed-in frame")
        (camera / "rsync-temp.part").write_bytes(looked.read_bytes())
        (camera / "rsync-temp.part").rename(camera / "renamed-inside.bmp")
        wait_for(lambda: seen_in("hints", "renamed-inside.bmp"), timeout=30, what="the renamed frame")
        events.take()
        camera.rename(inbox / "cam-02")
        wait_for(lambda: events.take().rescan, timeout=30, what="a rescan for the renamed camera folder")
    finally:
        events.stop()


def test_default_names_say_host_and_config(tmp_path: Path) -> None:
    import socket

    from watcher.service.instance import acquire_instance, default_prefix

    host = socket.gethostname()
    assert default_prefix(Path("/etc/cctv-gender/config.toml")) == host
    gpu1 = acquire_instance(tmp_path, name=None, prefix=default_prefix(Path("/etc/cctv-gender/gpu1.toml")))
    try:
        assert gpu1.name == f"{host}-gpu1-0"
    finally:
        gpu1.release()
