"""Which mount a site folder is on: the one its path reaches, not merely the deepest mount point
above it. The mount table also lists mounts hidden under another one mounted later at or above
their point; a share at processed/ hidden that way is not where frames go. Real tmpfs mounts (as
root) for the shares; the test is skipped where mounting is not allowed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import mount_tmpfs
from watcher.intake.folder_mounts import recorded_changes
from watcher.intake.folders import FOLDERS_MARK, SiteFolderAway, prepare_folders
from watcher.intake.mounts import mount_of


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Folders the test mounts tmpfs on, each unmounted lazily at teardown, last first."""
    mounted: list[Path] = []
    yield mounted
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def test_a_share_hidden_under_a_disk_mounted_above_it_is_not_where_processed_is(
    tmp_path: Path, mounts: list[Path]
) -> None:
    # processed/ is a share mounted at share/processed; a disk mounted later at share/ (the folder
    # above it) hides it, and a processed/ made there takes the frames: not the share recorded.
    share, data = tmp_path / "share", tmp_path / "data"
    site = {
        "paths.inbox": tmp_path / "inbox",
        "paths.processed": share / "processed",
        "paths.failed": tmp_path / "failed",
    }
    mount_tmpfs(site["paths.processed"], size="4m")
    mounts.append(site["paths.processed"])
    prepare_folders(site, data=data)  # the first start: processed/ on the share

    mount_tmpfs(share, size="4m")
    mounts.append(share)
    (share / "processed").mkdir()

    assert mount_of(share / "processed") == mount_of(share)
    assert [change.folder for change in recorded_changes(site, mark=data / FOLDERS_MARK)] == [
        site["paths.processed"]
    ]
    with pytest.raises(
        SiteFolderAway,
        match=re.escape(f"paths.processed {share / 'processed'} is under the mount point {share} "),
    ):
        prepare_folders(site, data=data)
