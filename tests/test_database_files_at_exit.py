"""The daemon closes its database whatever way it exits, so SQLite checkpoints its write-ahead log
and removes `-wal` and `-shm` with the last connection. Left behind, they belong to whoever ran
the daemon: after one `sudo cctv-gender watch --once` the service user could not open the database.
Real processes, real signals, a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import REPO, files_under, query, start_watch_process, wait_for
from watcher.config import load_config
from watcher.errors import StartupError
from watcher.faults import WORKER_CRASH_ENV, WORKER_START_CRASH_ENV
from watcher.pipeline.assembly import build_daemon


def _database_files(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "data").iterdir() if path.name.startswith("results"))


def _drop_frames(inbox: Path, count: int) -> None:
    for index in range(count):
        write_bmp(inbox / "cam" / f"f{index:02d}.bmp", width=32, height=24, seed=index)


def _watch_once(config: Path, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)]
    return subprocess.run(
        command, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def test_watch_once_leaves_only_the_database_file(make_config: Callable[..., Path], tmp_path: Path) -> None:
    config = make_config()
    _drop_frames(tmp_path / "inbox", 3)

    done = _watch_once(config)

    assert done.returncode == 0, done.stderr
    assert _database_files(tmp_path) == ["results.sqlite3"]
    # Checkpointed into the file itself: every row is there without the log.
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results") == [(3,)]


def test_watch_stopped_by_sigterm_leaves_only_the_database_file(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    daemon = start_watch_process(config, tmp_path / "watch.log")
    try:
        _drop_frames(tmp_path / "inbox", 2)
        wait_for(lambda: len(files_under(tmp_path / "processed")) == 2, timeout=60, what="the frames' moves")
        assert "results.sqlite3-wal" in _database_files(tmp_path)  # while it runs, the log is there
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, (tmp_path / "watch.log").read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()

    assert _database_files(tmp_path) == ["results.sqlite3"]
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results") == [(2,)]


def test_watch_stopped_by_a_dead_file_worker_leaves_only_the_database_file(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config(batch={"size": 2, "file_processes": 2})
    _drop_frames(tmp_path / "inbox", 6)

    done = _watch_once(config, env={WORKER_CRASH_ENV: "f03.bmp"})  # FileWorkersFailed while running

    assert done.returncode == 1, done.stderr
    assert "a file worker process died" in done.stderr and "Traceback" not in done.stderr
    assert _database_files(tmp_path) == ["results.sqlite3"]


def test_watch_whose_file_workers_die_as_they_start_says_so_in_one_line(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    """FileWorkersFailed came out of build_daemon: a traceback, and the frame buffers' shared memory
    left to the resource tracker ("There appear to be 2 leaked shared_memory objects")."""
    config = make_config(batch={"size": 2, "file_processes": 2})
    _drop_frames(tmp_path / "inbox", 3)

    done = _watch_once(config, env={WORKER_START_CRASH_ENV: "1"})

    assert done.returncode == 1, done.stderr  # systemd restarts it
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "cctv-gender: error: a file worker process died as it started (batch.file_processes = 0 keeps "
        "file work on threads)"
    ], done.stderr
    for trouble in ("Traceback", "leaked", "Warning"):
        assert trouble not in done.stderr, done.stderr
    assert files_under(tmp_path / "inbox") == [f"cam/f{index:02d}.bmp" for index in range(3)]
    assert _database_files(tmp_path) == ["results.sqlite3"]


def test_a_start_that_fails_after_opening_the_database_closes_it(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # The database is opened and migrated first; the model then fails to load. Closed at once, not
    # whenever the collector reaches the engine (the error's traceback holds it meanwhile).
    (tmp_path / "no-model").mkdir()
    config = load_config(make_config(model={"clip": str(tmp_path / "no-model")}))

    with pytest.raises(StartupError):
        build_daemon(config, stop=threading.Event())

    assert _database_files(tmp_path) == ["results.sqlite3"]
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results") == [(0,)]
