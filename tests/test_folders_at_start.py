"""Folders at start: a config that cannot reach its database makes none, and a folder the daemon
made once is never made again (it is most likely an unmounted share)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import files_under, mount_tmpfs, run_watch_once
from watcher.intake.folders import FOLDERS_MARK
from watcher.intake.mounts import mount_of

REPO = Path(__file__).resolve().parent.parent


def _status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", "status", "--format", "json", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _folders(root: Path) -> set[str]:
    return {path.name for path in root.iterdir() if path.is_dir()}


@pytest.mark.parametrize(
    ("url", "exit_code"),
    [
        pytest.param("nosuchdriver://somewhere/db", 2, id="invalid_url"),
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/test", 1, id="unreachable_server"),
    ],
)
def test_a_database_that_cannot_be_opened_leaves_no_folder(
    make_config: Callable[..., Path], tmp_path: Path, url: str, exit_code: int
) -> None:
    config = make_config(database={"url": url})
    before = _folders(tmp_path)

    result = run_watch_once(config)

    assert result.returncode == exit_code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _folders(tmp_path) == before  # no inbox/, processed/, failed/, data/


def test_once_never_makes_a_missing_output_folder_again(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    assert run_watch_once(config).returncode == 0  # the first start makes the folders
    (tmp_path / "processed").rmdir()  # unmounted
    write_bmp(tmp_path / "inbox" / "cam" / "a.bmp")

    result = run_watch_once(config)

    assert result.returncode == 1
    assert "processed is missing (an unmounted share?)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "processed").exists()
    assert files_under(tmp_path / "inbox") == ["cam/a.bmp"]  # untouched, for when it is back


@pytest.mark.parametrize("command", [["status"], ["results"], ["summary"]])
def test_a_command_that_only_reads_never_makes_the_database(
    make_config: Callable[..., Path], tmp_path: Path, command: list[str]
) -> None:
    config = make_config()  # its SQLite file, data/results.sqlite3, does not exist yet
    result = subprocess.run(
        [sys.executable, "-m", "watcher", *command, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"cctv-gender: error: there is no database at {tmp_path / 'data' / 'results.sqlite3'} yet: the "
        "daemon makes it at its first start (or run `cctv-gender db upgrade`)"
    ]
    assert not (tmp_path / "data").exists()


def test_a_site_starts_and_restarts_on_the_real_mount_table(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    first = run_watch_once(config)
    assert first.returncode == 0, first.stderr
    assert "their mounts recorded in" in first.stderr
    mount = mount_of(tmp_path)  # /proc/self/mountinfo, as the daemon reads it
    assert mount is not None
    recorded = json.loads((tmp_path / "data" / FOLDERS_MARK).read_text())["mounts"]
    assert recorded == [
        {"key": key, "folder": str(tmp_path / name), "mount": str(mount.point), "type": mount.fstype}
        for key, name in (
            ("paths.inbox", "inbox"),
            ("paths.processed", "processed"),
            ("paths.failed", "failed"),
        )
    ]

    again = run_watch_once(config)

    assert again.returncode == 0, again.stderr
    assert "mounts" not in again.stderr and "WARNING" not in again.stderr
    assert json.loads(_status(config).stdout)["problems"] == []


def test_status_says_a_folder_is_on_another_mount_than_recorded(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    assert run_watch_once(config).returncode == 0
    mark = tmp_path / "data" / FOLDERS_MARK
    recorded = json.loads(mark.read_text())
    # Faked: the record a first start makes while an NFS share is mounted at processed/, which a
    # test here cannot mount (test_an_unmounted_share_at_processed_stops_the_daemon does, as root).
    assert recorded["mounts"][1]["key"] == "paths.processed"
    recorded["mounts"][1].update(mount=str(tmp_path / "processed"), type="nfs4")
    mark.write_text(json.dumps(recorded))
    now = mount_of(tmp_path)
    assert now is not None
    # One sentence for it, in `status` and in the line that stops the start alike.
    moved = (
        f"paths.processed {tmp_path / 'processed'} is under the mount point {now.point} ({now.fstype}), "
        f"not {tmp_path / 'processed'} (nfs4) as recorded"
    )

    status = _status(config)
    result = run_watch_once(config)

    assert status.returncode == 1, status.stderr
    assert json.loads(status.stdout)["problems"] == [
        f"{moved} (an unmounted share?); `watch` will not start on it"
    ]
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"cctv-gender: error: {moved} (an unmounted share?): frames would land on the wrong disk, "
        "hidden once it is mounted again; mount it, or, if the move is deliberate, "
        f"remove {mark} to have the mounts recorded anew at the next start"
    ]


def test_an_unmounted_share_at_processed_stops_the_daemon(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # processed/ is itself a mount point (a real tmpfs, for the share): unmounted, it is an empty
    # folder on the local disk, where the daemon moved frames that the share then hid.
    processed = tmp_path / "processed"
    mount_tmpfs(processed, size="4m")
    try:
        config = make_config()
        assert run_watch_once(config).returncode == 0
        subprocess.run(["umount", str(processed)], check=True)
        write_bmp(tmp_path / "inbox" / "cam" / "a.bmp")

        result = run_watch_once(config)
        status = _status(config)
        now = mount_of(processed)
        assert now is not None
        moved = (
            f"paths.processed {processed} is under the mount point {now.point} ({now.fstype}), "
            f"not {processed} (tmpfs) as recorded (an unmounted share?)"
        )

        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"cctv-gender: error: {moved}: frames would land on the wrong disk")
        assert files_under(tmp_path / "inbox") == ["cam/a.bmp"] and files_under(processed) == []
        assert status.returncode == 1
        waiting, problem = json.loads(status.stdout)["problems"]
        assert waiting == "1 frame waiting and no daemon running"
        assert problem == f"{moved}; `watch` will not start on it"

        mount_tmpfs(processed, size="4m")  # back
        subprocess.run(["mount", "--bind", str(processed), str(processed)], check=True)  # as systemd's
        assert run_watch_once(config).returncode == 0
        assert files_under(processed) == ["cam/a.bmp"]
        assert json.loads(_status(config).stdout)["problems"] == []
    finally:
        for _ in range(3):
            subprocess.run(["umount", "-l", str(processed)], check=False, capture_output=True)
