"""Folders at start: a config that cannot reach its database makes none, and a folder the daemon
made once is never made again (it is most likely an unmounted share)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import files_under

REPO = Path(__file__).resolve().parent.parent


def _watch_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
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

    result = _watch_once(config)

    assert result.returncode == exit_code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert _folders(tmp_path) == before  # no inbox/, processed/, failed/, data/


def test_once_never_makes_a_missing_output_folder_again(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    assert _watch_once(config).returncode == 0  # the first start makes the folders
    (tmp_path / "processed").rmdir()  # unmounted
    write_bmp(tmp_path / "inbox" / "cam" / "a.bmp")

    result = _watch_once(config)

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
