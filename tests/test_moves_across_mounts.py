"""Moves between two mounts of one filesystem: the kernel refuses links and renames across mounts
(EXDEV) even where both are the same disk, as when systemd's ReadWritePaths= binds each of the
service's folders onto itself (systemd/install.sh names the inbox and processed/ apart). A real
bind mount, as root."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import files_under, query, run_watch_once
from watcher.intake.moving import move_no_clobber


@pytest.fixture
def processed(tmp_path: Path) -> Iterator[Path]:
    """processed/, a folder of tmp_path's disk bound onto itself (another mount, the same disk)."""
    folder = tmp_path / "processed"
    folder.mkdir()
    if subprocess.run(["mount", "--bind", folder, folder], capture_output=True, check=False).returncode:
        pytest.skip("needs root to bind-mount a folder")
    yield folder
    subprocess.run(["umount", "-l", folder], capture_output=True, check=False)


DIGEST = hashlib.sha256(b"frame").hexdigest()


def _claimed(tmp_path: Path) -> Path:
    """A frame's file in an in-progress area of tmp_path's disk."""
    source = tmp_path / "area" / "x.bmp"
    source.parent.mkdir()
    source.write_bytes(b"frame")
    return source


def test_a_frame_moves_into_another_mount_of_its_own_disk(tmp_path: Path, processed: Path) -> None:
    source = _claimed(tmp_path)

    final = move_no_clobber(source, processed / "cam" / "x.bmp")

    assert final == processed / "cam" / "x.bmp"
    assert final.read_bytes() == b"frame" and not source.exists()
    assert files_under(processed) == ["cam/x.bmp"]


def test_a_copy_into_another_mount_of_its_own_disk_is_finished_not_made_again(
    tmp_path: Path, processed: Path
) -> None:
    # Killed after the copy got its final name, before the claimed file went: the move again.
    source = _claimed(tmp_path)
    (processed / "cam").mkdir()
    (processed / "cam" / "x.bmp").write_bytes(b"frame")

    final = move_no_clobber(source, processed / "cam" / "x.bmp", sha256=DIGEST)

    assert final == processed / "cam" / "x.bmp" and not source.exists()
    assert files_under(processed) == ["cam/x.bmp"]


def test_an_equal_file_on_the_same_mount_is_another_frame_s(tmp_path: Path) -> None:
    # No bind mount: on one mount a move never copies, so the same bytes there are not ours.
    source = _claimed(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.bmp").write_bytes(b"frame")

    final = move_no_clobber(source, tmp_path / "out" / "x.bmp", sha256=DIGEST)

    assert final == tmp_path / "out" / "x-1.bmp" and not source.exists()
    assert files_under(tmp_path / "out") == ["x-1.bmp", "x.bmp"]


def test_watch_moves_frames_into_a_processed_bound_onto_itself(
    make_config: Callable[..., Path], tmp_path: Path, processed: Path
) -> None:
    names = [f"cam-{index:02d}/frame.bmp" for index in range(3)]
    for index, name in enumerate(names):
        write_bmp(tmp_path / "inbox" / name, seed=index)

    finished = run_watch_once(make_config())

    assert finished.returncode == 0, finished.stderr
    assert files_under(processed) == names
    assert files_under(tmp_path / "inbox") == []
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, stored_path FROM results")
    assert sorted(rows) == [(name, str(processed / name)) for name in names]
