"""A frame whose reserved name was taken between its commit and its move goes to the next free
name (`x-1.bmp`), and its row must come to say so, even when the daemon is killed between that
move and the update of the row."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from model.synthetic import bmp_bytes
from tests.helpers import RunningDaemon, files_under, query, wait_for
from watcher.faults import KILL_ENV

REPO = Path(__file__).resolve().parent.parent
OTHER = b"another frame's file, which took the reserved name"


def _run(config: Path, *, kill_at: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {key: value for key, value in os.environ.items() if key not in ("JOURNAL_STREAM", KILL_ENV)}
    if kill_at:
        env[KILL_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        check=False,
    )


# File work on threads with a claim's one-name layout; on processes with its own-folder layout.
_BOTH_WAYS = pytest.mark.parametrize(
    ("file_processes", "layout"),
    [pytest.param(0, "one-name", id="file-threads"), pytest.param(2, "own-folder", id="file-processes")],
)


def _killed_after_a_numbered_move(
    make_config: Callable[..., Path], tmp_path: Path, *, file_processes: int, layout: str
) -> tuple[Path, Path, str, bytes]:
    """One frame committed (a kill), its reserved name then taken, and a kill right after its move
    to the next free name, before its row was told: the config, database, reserved path, bytes."""
    config = make_config(batch={"size": 8, "max_wait_ms": 50, "file_processes": file_processes})
    name = "x.bmp" if layout == "one-name" else "y" * 240 + ".bmp"  # too long for a claim's name
    data = bmp_bytes(width=16, height=16, seed=1)
    (tmp_path / "inbox" / "cam-01").mkdir(parents=True)
    (tmp_path / "inbox" / "cam-01" / name).write_bytes(data)
    database = tmp_path / "data" / "results.sqlite3"

    killed = _run(config, kill_at="committed")
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")
    [(reserved,)] = query(database, "SELECT stored_path FROM results")
    # Its reserved name is taken before the move (another instance's frame, an operator's copy).
    Path(reserved).write_bytes(OTHER)
    killed = _run(config, kill_at="moved")
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")
    return config, database, reserved, data


@_BOTH_WAYS
def test_a_kill_after_a_numbered_move_leaves_the_row_saying_where_the_file_went(
    make_config: Callable[..., Path], tmp_path: Path, file_processes: int, layout: str
) -> None:
    config, database, reserved, data = _killed_after_a_numbered_move(
        make_config, tmp_path, file_processes=file_processes, layout=layout
    )
    drained = _run(config)
    assert drained.returncode == 0, drained.stderr.decode(errors="replace")

    [(stored, sha256)] = query(database, "SELECT stored_path, sha256 FROM results")
    assert stored != reserved and Path(reserved).read_bytes() == OTHER
    assert hashlib.sha256(Path(stored).read_bytes()).hexdigest() == sha256 == hashlib.sha256(data).hexdigest()
    assert len(files_under(tmp_path / "processed")) == 2
    assert files_under(tmp_path / "inbox") == []


def test_a_batch_parked_after_a_numbered_move_ends_with_its_row_saying_where_the_file_went(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from watcher.intake.placement import move_frame as real_move
    from watcher.pipeline import file_work

    failures: list[str] = []

    def taken_then_disk_full(frame: Any, stored: Path, **options: Any) -> Path:
        if failures:
            return real_move(frame, stored, **options)
        stored.write_bytes(OTHER)  # its reserved name taken between commit and move
        final = real_move(frame, stored, **options)
        failures.append(str(final))
        # The move is done; the flush after it finds the disk full: the batch waits, its row not
        # yet told where the file went.
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    monkeypatch.setattr(file_work, "move_frame", taken_then_disk_full)
    data = bmp_bytes(width=16, height=16, seed=1)
    (tmp_path / "inbox" / "cam-01").mkdir(parents=True)
    (tmp_path / "inbox" / "cam-01" / "x.bmp").write_bytes(data)
    daemon = start_daemon(inbox={"settle_ms": 0, "rescan_interval_s": 0.2}).daemon
    database = tmp_path / "data" / "results.sqlite3"

    # The area empties (the frame's note included) once its row says where its file went.
    def retried() -> bool:
        return "retrying" in caplog.text and not daemon.parked_frames and not files_under(tmp_path / "inbox")

    wait_for(retried, timeout=60, what="the parked batch's retry")
    [(stored, sha256)] = query(database, "SELECT stored_path, sha256 FROM results")
    assert stored == failures[0] and (tmp_path / "processed" / "cam-01" / "x.bmp").read_bytes() == OTHER
    assert hashlib.sha256(Path(stored).read_bytes()).hexdigest() == sha256 == hashlib.sha256(data).hexdigest()


@_BOTH_WAYS
def test_a_note_read_while_processed_is_away_still_ends_with_the_row_saying_where_the_file_went(
    make_config: Callable[..., Path], tmp_path: Path, file_processes: int, layout: str
) -> None:
    # The kill after the numbered move, then a start while processed/ is an empty mount point
    # (its share not mounted yet): the note must not be dropped for its file not being seen, or
    # the row keeps naming the other frame's file for good.
    config, database, reserved, data = _killed_after_a_numbered_move(
        make_config, tmp_path, file_processes=file_processes, layout=layout
    )
    processed, away = tmp_path / "processed", tmp_path / "processed.away"
    processed.rename(away)
    processed.mkdir()  # its mount point, the share not mounted on it yet
    _run(config)  # it starts (an empty mount point looks like an empty processed/) and recovers
    processed.rmdir()
    away.rename(processed)
    drained = _run(config)
    assert drained.returncode == 0, drained.stderr.decode(errors="replace")

    [(stored, sha256)] = query(database, "SELECT stored_path, sha256 FROM results")
    assert stored != reserved and Path(reserved).read_bytes() == OTHER
    assert hashlib.sha256(Path(stored).read_bytes()).hexdigest() == sha256 == hashlib.sha256(data).hexdigest()
    assert files_under(tmp_path / "inbox") == []
