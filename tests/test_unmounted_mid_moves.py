"""A share lazily unmounted from processed/ in the middle of a batch's moves (`umount -l`, which
succeeds while files are open there): no frame goes onto the local disk under its mount point, the
batch waits as one whose folder was away before its moves, and its moves finish once the share
is back.

The share is a real tmpfs (the server's side, `share/`) bind-mounted at processed/, as root: taken
away from processed/ and brought back by mounting it there again, it is the same share with the
same files, as an NFS export mounted again would be, so the test can require every frame in
processed/ once at the end. A fresh tmpfs would be another share: the frames moved before it went
would be on the old one, gone with it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, mount_tmpfs, query, wait_for
from watcher.faults import PAUSE_ENV, PAUSE_FILE_ENV
from watcher.intake.held_folders import Reach
from watcher.intake.moving import move_no_clobber
from watcher.intake.placement import OutputFolderAway
from watcher.intake.site_mounts import identity_of
from watcher.pipeline.delivery import Deliverer
from watcher.pipeline.stages import Stored

# One batch of eight, a camera folder each: each move makes its own folder's entries.
FRAMES = [f"cam-{index:02d}/frame.bmp" for index in range(8)]
EVENTS = {"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0}


@dataclass
class Share:
    """A real tmpfs at `folder` (the server's side), mounted at `processed` by a bind mount."""

    folder: Path
    processed: Path
    binds: int = 0

    def mount_at_processed(self) -> None:
        """The share mounted at processed/ (again): the same files, as an NFS share mounted again."""
        self.processed.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", self.folder, self.processed], check=True, capture_output=True)
        self.binds += 1

    def unmount_lazily(self) -> None:
        subprocess.run(["umount", "-l", self.processed], check=True)


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Share]:
    """The share, mounted at processed/; whatever of it is still mounted is unmounted at teardown."""
    made = Share(tmp_path / "share", tmp_path / "processed")
    mount_tmpfs(made.folder, size="16m")  # skips unless root
    try:
        made.mount_at_processed()
        yield made
    finally:
        for folder in [made.processed] * made.binds + [made.folder]:
            subprocess.run(["umount", "-l", folder], check=False, capture_output=True)


@pytest.mark.parametrize("file_processes", [0, 2], ids=["file-threads", "file-processes"])
def test_processed_unmounted_in_the_middle_of_a_batch_s_moves_puts_no_frame_on_the_local_disk(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    share: Share, caplog: pytest.LogCaptureFixture, file_processes: int,
) -> None:  # fmt: skip
    processed, inbox = share.processed, tmp_path / "inbox"
    paused = tmp_path / "paused"
    # The third frame's move pauses once its folder is looked at, before anything of it moves.
    monkeypatch.setenv(PAUSE_ENV, "placing:3")
    monkeypatch.setenv(PAUSE_FILE_ENV, str(paused))
    stopped = _moves_stopped(monkeypatch)
    for index, name in enumerate(FRAMES):
        write_bmp(inbox / name, seed=index)
    batch = {"size": 8, "max_wait_ms": 50, "file_processes": file_processes}
    running = start_daemon(inbox=EVENTS, batch=batch)
    wait_for(paused.exists, timeout=120, what="the third move to pause")

    share.unmount_lazily()
    # The mount point's own folder, on the local disk: looked at again once the share is back.
    local = os.open(processed, os.O_RDONLY | os.O_DIRECTORY)
    try:
        paused.unlink()
        wait_for(lambda: stopped or os.listdir(processed), what="the batch's moves to stop")
        assert os.listdir(processed) == [], "moved onto the local disk, under the mount point"
        assert isinstance(stopped[0], OutputFolderAway)
        assert "went away during the moves" in str(stopped[0])
        database = tmp_path / "data" / "results.sqlite3"
        expected_rows = [(name, str(processed / name)) for name in FRAMES]
        assert sorted(query(database, "SELECT source_path, stored_path FROM results")) == expected_rows
        on_the_share = files_under(share.folder)
        # The paused move went on, through the folder held, onto the share; the next one found
        # processed/ elsewhere.
        assert set(on_the_share) < set(FRAMES)
        if not file_processes:
            assert len(on_the_share) == 3

        share.mount_at_processed()
        running.daemon.wake()
        wait_for(lambda: files_under(processed) == FRAMES and running.daemon.parked_frames == 0, what="moves")
        assert os.listdir(local) == []
    finally:
        os.close(local)
    assert "cannot store a batch of 8 frames" in caplog.text  # it waited, parked
    assert sorted(query(database, "SELECT source_path, stored_path FROM results")) == expected_rows
    wait_for(lambda: files_under(inbox) == [], what="the claims released")


def _moves_stopped(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """What stops a batch's moves, as its thread in the daemon sees it (with file processes, a
    worker's error crosses back to it)."""
    stopped: list[BaseException] = []
    deliver = Deliverer.deliver

    def seen(self: Deliverer, stored: list[Stored]) -> None:
        try:
            deliver(self, stored)
        except OSError as error:
            stopped.append(error)
            raise

    monkeypatch.setattr(Deliverer, "deliver", seen)
    return stopped


def test_a_move_through_a_held_folder_lands_in_it_once_its_path_leads_elsewhere(
    tmp_path: Path, share: Share
) -> None:
    processed = share.processed
    reach = Reach.held(processed, identity_of(os.stat(processed)))
    assert reach is not None and reach.leads_here()
    source = tmp_path / "x.bmp"
    source.write_bytes(b"frame")

    share.unmount_lazily()
    try:
        assert not reach.leads_here()
        assert Reach.held(processed, reach.identity or (0, 0)) is None  # a new handle is refused
        final = move_no_clobber(source, processed / "cam" / "x.bmp", reach=reach)
    finally:
        reach.close()

    assert final == processed / "cam" / "x.bmp"
    assert os.listdir(processed) == [] and not source.exists()
    assert (share.folder / "cam" / "x.bmp").read_bytes() == b"frame"
