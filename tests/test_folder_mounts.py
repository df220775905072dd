"""The mount each site folder lives on, recorded at the first start and compared at each later
one: a share unmounted from processed/ itself (or from a folder above it, with a processed/ made
by hand meanwhile) leaves a folder on the local disk that frames must not be moved to.

Mounting a share needs root and a server, which a test here does not have: these tests fake the
kernel's mount table (a mountinfo file in tmp_path, as /proc/self/mountinfo reads) and nothing
else; the folders, the mark and the daemon's start-up code are real. tests/test_folders_at_start.py
runs the daemon on the real mount table, and on a real tmpfs where it may mount one."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.intake.folder_mounts import recorded_changes
from watcher.intake.folders import FOLDERS_MARK, SiteFolderAway, prepare_folders
from watcher.intake.mounts import Mount, mount_of

ROOT = "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw"


def _escaped(point: str) -> str:
    return point.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")


def _table(path: Path, *shares: str) -> Path:
    """A fake mount table: the root on ext4 and an NFS share mounted at each of `shares`."""
    lines = [ROOT]
    for index, point in enumerate(shares):
        lines.append(f"{40 + index} 22 0:{50 + index} / {_escaped(point)} rw - nfs4 nas:/export{index} rw")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """processed/ on the share, whose mount point's name has a space (mountinfo writes \\040)."""
    return {
        "paths.inbox": tmp_path / "inbox",
        "paths.processed": tmp_path / "nas share" / "processed",
        "paths.failed": tmp_path / "failed",
    }


def _records(data: Path) -> list[dict[str, str]]:
    mounts: list[dict[str, str]] = json.loads((data / FOLDERS_MARK).read_text())["mounts"]
    return mounts


def _processed(data: Path) -> list[str]:
    """The mounts recorded for paths.processed."""
    return [item["mount"] for item in _records(data) if item["key"] == "paths.processed"]


@pytest.mark.parametrize(
    "share",
    [pytest.param("nas share/processed", id="at_the_folder"), pytest.param("nas share", id="above_it")],
)
def test_a_folder_on_another_mount_than_recorded_stops_the_next_start(
    tmp_path: Path, site: dict[str, Path], share: str
) -> None:
    data, point = tmp_path / "data", str(tmp_path / share)
    prepare_folders(site, data=data, mountinfo=_table(tmp_path / "mounted", point))
    assert _records(data) == [
        {"key": "paths.inbox", "folder": str(site["paths.inbox"]), "mount": "/", "type": "ext4"},
        {"key": "paths.processed", "folder": str(site["paths.processed"]), "mount": point, "type": "nfs4"},
        {"key": "paths.failed", "folder": str(site["paths.failed"]), "mount": "/", "type": "ext4"},
    ]
    unmounted = _table(tmp_path / "unmounted")  # its mount point: an empty folder on the local disk

    with pytest.raises(SiteFolderAway) as stopped:
        prepare_folders(site, data=data, mountinfo=unmounted)

    assert str(stopped.value) == (
        f"paths.processed {site['paths.processed']} is under the mount point / (ext4), not {point} (nfs4) "
        "as recorded (an unmounted share?): frames would land on the wrong disk, hidden once it is "
        f"mounted again; mount it, or, if the move is deliberate, remove {data / FOLDERS_MARK} to have "
        "the mounts recorded anew at the next start"
    )
    prepare_folders(site, data=data, mountinfo=_table(tmp_path / "back", point))  # mounted again
    (data / FOLDERS_MARK).unlink()  # the move accepted, as the line says
    prepare_folders(site, data=data, mountinfo=unmounted)
    prepare_folders(site, data=data, mountinfo=unmounted)
    assert _processed(data) == ["/"]


def test_another_filesystem_at_the_recorded_mount_point_is_no_move(
    tmp_path: Path, site: dict[str, Path]
) -> None:
    # nfs remounted as nfs4, or an automount seen as autofs before its share is mounted on it: the
    # same mount point is the same place, and a stop there would halt the site for nothing.
    data, point = tmp_path / "data", str(tmp_path / "nas share")
    prepare_folders(site, data=data, mountinfo=_table(tmp_path / "mounted", point))
    for fstype in ("nfs", "autofs", "cifs"):
        table = tmp_path / f"as-{fstype}"
        table.write_text(
            _table(tmp_path / "plain", point).read_text().replace("- nfs4 ", f"- {fstype} "), encoding="utf-8"
        )
        prepare_folders(site, data=data, mountinfo=table)
    assert _processed(data) == [point]


def test_a_restart_on_the_same_mounts_neither_stops_nor_writes(
    tmp_path: Path, site: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    data, table = tmp_path / "data", _table(tmp_path / "mountinfo", str(tmp_path / "nas share"))
    prepare_folders(site, data=data, mountinfo=table)
    written = (data / FOLDERS_MARK).stat()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="watcher.intake.folders"):
        prepare_folders(site, data=data, mountinfo=table)
    assert caplog.records == []
    after = (data / FOLDERS_MARK).stat()
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_a_mark_made_before_mounts_were_recorded_gets_them_at_the_next_start(
    tmp_path: Path, site: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    data, point = tmp_path / "data", str(tmp_path / "nas share")
    for folder in (*site.values(), data):
        folder.mkdir(parents=True)
    (data / FOLDERS_MARK).touch()  # an older daemon's mark: an empty file
    with caplog.at_level(logging.INFO, logger="watcher.intake.folders"):
        prepare_folders(site, data=data, mountinfo=_table(tmp_path / "mounted", point))
    assert [record.getMessage() for record in caplog.records] == [
        f"{data / FOLDERS_MARK} was made before mounts were recorded; recorded now: paths.inbox on / "
        f"(ext4), paths.processed on {point} (nfs4), paths.failed on / (ext4)"
    ]
    with pytest.raises(
        SiteFolderAway, match="is under the mount point / \\(ext4\\), not .* \\(nfs4\\) as recorded"
    ):
        prepare_folders(site, data=data, mountinfo=_table(tmp_path / "unmounted"))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00\xff garbage", id="not_json"),
        pytest.param(b'{"mounts": 3}', id="mounts_not_a_table"),
        pytest.param(b"[1, 2]", id="a_list"),
        pytest.param(b'{"mounts": [{"key": "paths.inbox", "folder": "/x"}]}', id="a_record_cut_short"),
        pytest.param(b'{"mounts": [{"key": "paths.inbox", "folder": "/x", "mount": "/", "ty', id="cut_off"),
        pytest.param(b'{"mounts": {"paths.inbox": {"folder": "/x"}}}', id="records_by_key"),
    ],
)
def test_a_mark_that_is_not_ours_is_recorded_anew_not_a_halt(
    tmp_path: Path, site: dict[str, Path], caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    # A hand edit or a damaged disk (the daemon only replaces it whole): stopping every start for
    # a bookkeeping file would halt the site until someone reads the log; the folders are there.
    data, point = tmp_path / "data", str(tmp_path / "nas share")
    mounted = _table(tmp_path / "mounted", point)
    prepare_folders(site, data=data, mountinfo=mounted)
    (data / FOLDERS_MARK).write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="watcher.intake.folders"):
        prepare_folders(site, data=data, mountinfo=mounted)

    [warning] = caplog.records
    assert warning.getMessage().startswith(f"{data / FOLDERS_MARK} cannot be read (not a record of mounts")
    assert warning.getMessage().endswith("): the folders' mounts are recorded anew")
    assert _processed(data) == [point]
    with pytest.raises(SiteFolderAway):  # and it guards again
        prepare_folders(site, data=data, mountinfo=_table(tmp_path / "unmounted"))


def test_a_mark_that_cannot_be_read_or_replaced_does_not_stop_the_start(
    tmp_path: Path, site: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    for folder in site.values():
        folder.mkdir(parents=True)
    (data / FOLDERS_MARK).mkdir(parents=True)  # a folder where the mark should be
    with caplog.at_level(logging.WARNING, logger="watcher.intake.folders"):
        prepare_folders(site, data=data, mountinfo=_table(tmp_path / "mountinfo"))
    assert [record.getMessage() for record in caplog.records] == [
        f"{data / FOLDERS_MARK} cannot be read (Is a directory): the folders' mounts are recorded anew",
        f"cannot record the folders' mounts in {data / FOLDERS_MARK}: Is a directory",
    ]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/data, which the test may not write: a read-only bind mount as root (for whom
    permissions are no bar), mode 0555 otherwise."""
    data = tmp_path / "data"
    data.mkdir()
    (data / FOLDERS_MARK).touch()  # an older daemon's mark
    if os.geteuid() != 0:
        data.chmod(0o555)
        yield data
        data.chmod(0o755)
        return
    for options in (["--bind"], ["-o", "remount,bind,ro"]):
        if subprocess.run(["mount", *options, str(data), str(data)], check=False).returncode:
            subprocess.run(["umount", "-l", str(data)], check=False)
            pytest.skip("cannot make a read-only bind mount here")
    yield data
    subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_read_only_data_folder_starts_with_a_warning(
    tmp_path: Path, site: dict[str, Path], read_only: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for folder in site.values():
        folder.mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="watcher.intake.folders"):
        start = prepare_folders(site, data=read_only, mountinfo=_table(tmp_path / "mountinfo"))
    [warning] = caplog.records
    assert warning.getMessage().startswith(
        f"cannot record the folders' mounts in {read_only / FOLDERS_MARK}: "
    )
    assert (read_only / FOLDERS_MARK).read_bytes() == b""
    # Unrecorded, the mounts seen at start are what the running daemon holds the folders to.
    assert start == {(key, folder): Mount(Path("/"), "ext4") for key, folder in site.items()}


def test_a_folder_moved_in_the_config_is_a_first_sight(
    tmp_path: Path, site: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    prepare_folders(site, data=data, mountinfo=_table(tmp_path / "mounted", str(tmp_path / "nas share")))
    moved = {**site, "paths.processed": tmp_path / "local" / "processed"}
    moved["paths.processed"].mkdir(parents=True)  # not made by the daemon: made once is made
    with caplog.at_level(logging.INFO, logger="watcher.intake.folders"):
        prepare_folders(moved, data=data, mountinfo=_table(tmp_path / "unmounted"))
    assert [record.getMessage() for record in caplog.records] == [
        f"mounts recorded in {data / FOLDERS_MARK} for a new folder: paths.processed on / (ext4)"
    ]
    old, new = (item for item in _records(data) if item["key"] == "paths.processed")
    assert (old["folder"], old["mount"]) == (str(site["paths.processed"]), str(tmp_path / "nas share"))
    assert (new["folder"], new["mount"]) == (str(moved["paths.processed"]), "/")
    # Kept side by side: a second config on the same paths.data (its own folders) or a move back
    # is not recorded again at each start.
    caplog.clear()
    prepare_folders(site, data=data, mountinfo=_table(tmp_path / "back", str(tmp_path / "nas share")))
    prepare_folders(moved, data=data, mountinfo=_table(tmp_path / "unmounted"))
    assert caplog.records == []


def test_a_new_path_under_a_recorded_share_that_is_gone_stops_the_start(
    tmp_path: Path, site: dict[str, Path]
) -> None:
    # processed/ on the share is a symlink (processed -> processed-2026), which the config resolves:
    # with the share unmounted, the same config leads to the folder left under its mount point, a
    # path never recorded. A first sight there would record the local disk and take frames.
    data, share = tmp_path / "data", tmp_path / "nas share"
    on_the_share = {**site, "paths.processed": share / "processed-2026"}
    on_the_share["paths.processed"].mkdir(parents=True)
    prepare_folders(on_the_share, data=data, mountinfo=_table(tmp_path / "mounted", str(share)))
    unmounted = _table(tmp_path / "unmounted")
    site["paths.processed"].mkdir(parents=True)

    with pytest.raises(
        SiteFolderAway, match=re.escape(f"is under the mount point / (ext4), not {share} (nfs4) as recorded")
    ):
        prepare_folders(site, data=data, mountinfo=unmounted)
    assert [
        change.folder for change in recorded_changes(site, mark=data / FOLDERS_MARK, mountinfo=unmounted)
    ] == [site["paths.processed"]]
    prepare_folders(site, data=data, mountinfo=_table(tmp_path / "back", str(share)))  # mounted again
    elsewhere = {**site, "paths.processed": tmp_path / "local" / "processed"}  # not under the share
    elsewhere["paths.processed"].mkdir(parents=True)
    prepare_folders(elsewhere, data=data, mountinfo=unmounted)


def test_no_mount_table_records_nothing_and_stops_nothing(tmp_path: Path, site: dict[str, Path]) -> None:
    data = tmp_path / "data"
    prepare_folders(site, data=data, mountinfo=tmp_path / "no-such-mountinfo")
    assert _records(data) == []
    prepare_folders(site, data=data, mountinfo=tmp_path / "no-such-mountinfo")


BINDS = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 252:1 /srv/cctv-gender /srv/cctv-gender rw - ext4 /dev/vda rw
40 22 0:50 / /mnt/nas rw - nfs4 nas:/export rw
41 40 0:50 /processed /mnt/nas/processed rw - nfs4 nas:/export rw
42 22 252:1 /data/other /mnt/bound rw - ext4 /dev/vda rw
43 22 0:51 / /mnt/cam\\303\\251ra\\0401 rw - cifs //host/share rw
44 22 0:52 / /mnt/twice rw - tmpfs tmpfs rw
45 44 0:53 / /mnt/twice rw - nfs4 new:/export rw
46 22 0:50 /processed /mnt/nas-processed rw - nfs4 nas:/export rw
47 22 0:54 / /mnt/cr\rin\013name rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("folder", "mount"),
    [
        # systemd binds each ReadWritePaths= folder onto itself in the service's namespace: the same
        # files, and a mount point `status`, run outside it, does not see.
        pytest.param("/srv/cctv-gender/processed", Mount(Path("/"), "ext4"), id="bound_onto_itself"),
        pytest.param("/mnt/nas/processed/cam", Mount(Path("/mnt/nas"), "nfs4"), id="share_bound_onto_itself"),
        pytest.param("/mnt/bound/processed", Mount(Path("/mnt/bound"), "ext4"), id="another_folder_bound"),
        pytest.param(
            "/mnt/nas-processed", Mount(Path("/mnt/nas-processed"), "nfs4"), id="share_bound_elsewhere"
        ),
        pytest.param(
            "/mnt/caméra 1/processed", Mount(Path("/mnt/caméra 1"), "cifs"), id="escaped_utf8_and_space"
        ),
        pytest.param("/mnt/twice/processed", Mount(Path("/mnt/twice"), "nfs4"), id="mounted_over"),
        # The kernel escapes a space, tab, newline and backslash only: a carriage return (or a
        # vertical tab) in a mount point is written as it is, inside its line.
        pytest.param(
            "/mnt/cr\rin\x0bname/processed", Mount(Path("/mnt/cr\rin\x0bname"), "tmpfs"), id="carriage_return"
        ),
        pytest.param("/var/lib/cctv", Mount(Path("/"), "ext4"), id="root"),
    ],
)
def test_the_mount_a_folder_lives_on(tmp_path: Path, folder: str, mount: Mount) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(BINDS, encoding="utf-8")
    assert mount_of(Path(folder), mountinfo=mountinfo) == mount


def test_no_mount_is_known_without_a_table(tmp_path: Path) -> None:
    assert mount_of(tmp_path, mountinfo=tmp_path / "none") is None


def test_a_table_whose_mounts_are_each_others_parents_ends(tmp_path: Path) -> None:
    # The kernel's cannot be so; a hand-made or damaged one must not hang the start.
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"{ROOT}\n50 51 252:1 /x /x rw - ext4 /dev/vda rw\n51 50 252:1 /x /x rw - ext4 /dev/vda rw\n"
    )
    assert mount_of(Path("/x/processed"), mountinfo=mountinfo) == Mount(Path("/x"), "ext4")
