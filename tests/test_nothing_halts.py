"""Issue 13: no file, name, folder or shape stops or stalls the daemon; a frame that keeps killing
it is failed after 3 crashes; a database file deleted under it stops it before anything moves.

Everything is real (files, SQLite and PostgreSQL, the daemon's loop, subprocesses, signals); only
CLIP's weights are random (the tiny checkpoint: no downloads here).
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import (
    RunningDaemon,
    files_under,
    mount_tmpfs,
    query,
    query_url,
    start_watch_process,
    wait_for,
    write_config,
)
from watcher.faults import KILL_ENV, POISON_ENV
from watcher.intake.names import original_bytes, storable

REPO = Path(__file__).resolve().parents[1]
# Without CAP_DAC_OVERRIDE root is held to a folder's mode, as the service user would be.
_WITHOUT_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def _watch(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    dropped = (KILL_ENV, POISON_ENV, "JOURNAL_STREAM")
    clean = {key: value for key, value in os.environ.items() if key not in dropped}
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "watcher", "watch", "--config", str(config), *args],
        cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _rows(url: str) -> dict[str, tuple[str, str | None, str]]:
    """source_path → (status, error, stored_path)."""
    rows = query_url(url, "SELECT source_path, status, error, stored_path FROM results")
    assert len(rows) == len({row[0] for row in rows}), "a frame has two rows"
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


# -- the property: whatever lands in the inbox, everything ends with one row and one file ----------

_NAME_BYTES = st.binary(min_size=1, max_size=251).filter(
    lambda raw: b"/" not in raw and b"\0" not in raw and raw[:1] not in (b".", b"~")
)
_FOLDER_BYTES = st.binary(min_size=1, max_size=255).filter(
    lambda raw: b"/" not in raw and b"\0" not in raw and raw[:1] != b"." and raw not in (b"..",)
)


def _content(kind: str, width: int, height: int, seed: int) -> bytes:
    good = bmp_bytes(width=width, height=height, seed=seed)
    return {
        "good": good,
        "palette": bmp_bytes(width=width, height=height, seed=seed, mode="P"),
        "truncated": good[: max(len(good) // 2, 1)],
        "oversized": good + b"\0" * (128 * 1024),
        "garbage": bytes((seed * 7 + index) % 256 for index in range(width * 13)),
        "empty": b"",
    }[kind]


_FRAMES = st.lists(
    st.tuples(
        st.lists(_FOLDER_BYTES, max_size=3),
        _NAME_BYTES,
        st.sampled_from(["good", "palette", "truncated", "oversized", "garbage", "empty"]),
        st.integers(1, 90),
        st.integers(1, 90),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=_FRAMES, deep=st.booleans())
def test_any_names_and_contents_end_with_one_row_and_one_file(
    frames: list[tuple[list[bytes], bytes, str, int, int]], deep: bool, tmp_path: Path, tiny_clip: Path
) -> None:
    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon

    site = tmp_path / uuid.uuid4().hex[:8]
    inbox = site / "inbox"
    dropped: dict[bytes, str] = {}
    # Known-good frames beside the odd ones: they must come out `ok`.
    for index in range(2):
        write_bmp(inbox / "known" / f"good-{index}.bmp", seed=index)
        dropped[f"known/good-{index}.bmp".encode()] = "good"
    if deep:
        # Nesting up to PATH_MAX: the in-progress area and processed/ add bytes to this path.
        room = 4095 - len(os.fsencode(inbox)) - 260 - 2
        frames = [([b"d" * 200] * (room // 201), b"deep.bmp", "good", 16, 16), *frames]
    for folders, name, kind, width, height in frames:
        relative = b"/".join([*folders, name + b".bmp"])
        path = os.fsencode(inbox) + b"/" + relative
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            continue  # a generated folder clashes with a generated file: not a drop
        if os.path.isdir(path):
            continue
        with open(path, "wb") as handle:
            handle.write(_content(kind, width, height, seed=len(dropped)))
        dropped[relative] = kind
    config = write_config(site / "config.toml", {
        "model": {"clip": str(tiny_clip), "device": "cpu"},
        "inbox": {"settle_ms": 0, "readiness_timeout_s": 0.01},
        "batch": {"size": 4, "max_wait_ms": 0},
    })  # fmt: skip

    import threading

    report = build_daemon(load_config(config), stop=threading.Event()).run(once=True)

    assert report.left_parked == 0
    rows = _rows(f"sqlite:///{site / 'data' / 'results.sqlite3'}")
    for relative, kind in dropped.items():
        stored = storable(os.fsdecode(relative))
        assert stored in rows, f"{relative!r} has no row"
        status, error, stored_path = rows[stored]
        assert original_bytes(stored) == relative
        assert os.path.lexists(stored_path), f"{relative!r}: {stored_path} does not exist"
        assert Path(stored_path).is_relative_to(site / ("processed" if status == "ok" else "failed"))
        if kind == "good" and relative.startswith(b"known/"):
            assert status == "ok", error
    assert files_under(inbox) == [], "something stayed in the inbox or in progress"
    assert len(rows) == len(dropped)


# -- names and destinations ---------------------------------------------------------------------


def test_a_latin1_name_is_stored_escaped_and_found_again(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str
) -> None:
    inbox = tmp_path / "inbox"
    latin1 = os.fsdecode("caméra-1.bmp".encode("latin-1"))  # as a Windows exporter writes it
    camera = os.fsdecode("entrée".encode("latin-1"))
    write_bmp(inbox / camera / latin1, seed=1)
    write_bmp(inbox / camera / "innocent.bmp", seed=2)
    write_bmp(inbox / camera / "cam\\xe9ra-1.bmp", seed=3)  # a real backslash: another name
    config = make_config(database={"url": database_url})

    result = _watch(config, "--once")

    assert result.returncode == 0, result.stderr
    rows = _rows(database_url)
    assert set(rows) == {
        "entr\\xe9e/cam\\xe9ra-1.bmp",
        "entr\\xe9e/cam\\\\xe9ra-1.bmp",
        "entr\\xe9e/innocent.bmp",
    }
    status, _, stored = rows["entr\\xe9e/cam\\xe9ra-1.bmp"]
    assert status == "ok" and Path(stored).is_file(), "stored_path must find the file"
    assert original_bytes("entr\\xe9e/cam\\xe9ra-1.bmp") == "entrée/caméra-1.bmp".encode("latin-1")
    cameras = {camera for (camera,) in query_url(database_url, "SELECT camera FROM results")}
    assert cameras == {"entr\\xe9e"}


def test_a_file_where_the_camera_folder_should_be_fails_that_frame_only(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    (tmp_path / "processed").mkdir()
    (tmp_path / "processed" / "cam-07").write_bytes(b"an operator's file")
    write_bmp(tmp_path / "inbox" / "cam-07" / "x.bmp", seed=1)
    write_bmp(tmp_path / "inbox" / "cam-08" / "y.bmp", seed=2)

    result = _watch(make_config(), "--once")

    assert result.returncode == 0, result.stderr
    rows = _rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")
    status, error, stored = rows["cam-07/x.bmp"]
    assert status == "failed" and error.startswith("cannot be placed in"), error
    assert Path(stored).parent == tmp_path / "failed" and Path(stored).is_file()
    assert rows["cam-08/y.bmp"][0] == "ok"
    assert (tmp_path / "processed" / "cam-07").read_bytes() == b"an operator's file"


def test_a_camera_folder_the_daemon_may_not_write_leaves_its_frames_and_stops_nothing(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("drops root's override capabilities with setpriv: needs root")
    locked = tmp_path / "inbox" / "cam-locked"
    write_bmp(locked / "x.bmp", seed=1)
    write_bmp(tmp_path / "inbox" / "cam-open" / "y.bmp", seed=2)
    locked.chmod(0o555)  # an operator's mkdir under another umask
    config = make_config()
    # Without CAP_DAC_OVERRIDE root is held to the folder's mode, as the service user would be.
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]

    try:
        result = _watch(config, "--once", prefix=prefix)
    finally:
        locked.chmod(0o755)

    assert result.returncode == 0, result.stderr
    assert "stays in the inbox: cannot take it out of the inbox: Permission denied" in result.stderr
    assert (locked / "x.bmp").is_file(), "the refused frame must be left untouched"
    rows = _rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")
    assert set(rows) == {"cam-open/y.bmp"} and rows["cam-open/y.bmp"][0] == "ok"


def test_a_camera_folder_made_unreadable_while_its_frame_is_in_a_batch_stops_nothing(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("drops root's override capabilities with setpriv: needs root")
    camera = tmp_path / "inbox" / "cam"
    write_bmp(camera / "x.bmp")
    # The batch stays open a while after the claim: the folder's permission goes meanwhile, before
    # the claims are flushed (which opened the folder the frame left, and stopped the daemon).
    config = make_config(batch={"size": 64, "max_wait_ms": 5000})
    log = tmp_path / "watch.log"
    process = start_watch_process(config, log, prefix=_WITHOUT_OVERRIDES)
    try:
        wait_for(lambda: not (camera / "x.bmp").exists() or process.poll() is not None, timeout=120)
        camera.chmod(0)
        database = tmp_path / "data" / "results.sqlite3"
        wait_for(
            lambda: (
                process.poll() is not None
                or (database.exists() and query(database, "SELECT count(*) FROM results")[0][0] == 1)
            ),
            what="the frame's row",
        )
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        camera.chmod(0o755)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert query(database, "SELECT source_path, status FROM results") == [("cam/x.bmp", "ok")]
    assert files_under(tmp_path / "processed") == ["cam/x.bmp"]
    assert "Traceback" not in log.read_text()


# -- bounds before work -------------------------------------------------------------------------


def _bmp_header(*, width: int, height: int, declared: int) -> bytes:
    return (
        b"BM" + declared.to_bytes(4, "little") + b"\0\0\0\0" + (54).to_bytes(4, "little")
        + (40).to_bytes(4, "little") + width.to_bytes(4, "little", signed=True)
        + height.to_bytes(4, "little", signed=True) + (1).to_bytes(2, "little") + (24).to_bytes(2, "little")
        + b"\0" * 24
    )  # fmt: skip


# Runs the command after it and prints the child's peak RSS last on stderr (a process of its own, so
# no earlier child of the test process counts).
_PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def test_huge_sparse_and_extreme_shapes_are_refused_before_reading(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str
) -> None:
    inbox = tmp_path / "inbox" / "cam"
    inbox.mkdir(parents=True)
    # A 40000 x 1 frame is 120 KB on disk and would resize to 224 x 8,960,000 for CLIP.
    thin = _bmp_header(width=40_000, height=1, declared=54 + 120_000)
    (inbox / "thin.bmp").write_bytes(thin + bytes(120_000))
    tall = _bmp_header(width=1, height=-40_000, declared=54 + 160_000)
    (inbox / "tall.bmp").write_bytes(tall + bytes(160_000))
    # 2.5 GB, sparse, declaring a small frame: over the 32-bit size PostgreSQL's INTEGER holds.
    with (inbox / "sparse.bmp").open("wb") as handle:
        handle.write(_bmp_header(width=16, height=16, declared=54 + 16 * 48))
        handle.truncate(2_500_000_000)
    # A header that declares nothing, over inbox.max_file_bytes.
    with (inbox / "undeclared.bmp").open("wb") as handle:
        handle.write(_bmp_header(width=16, height=16, declared=0))
        handle.truncate(3 * 1024 * 1024)
    write_bmp(inbox / "good.bmp", seed=3)
    config = make_config(
        database={"url": database_url}, inbox={"settle_ms": 0, "max_file_bytes": 2 * 1024 * 1024}
    )

    result = _watch(config, "--once", prefix=[sys.executable, "-c", _PEAK_RSS_WRAPPER])
    peak_mib = int(result.stderr.splitlines()[-1].removeprefix("peak-rss-kib ")) / 1024

    assert result.returncode == 0, result.stderr
    rows = _rows(database_url)
    assert rows["cam/good.bmp"][0] == "ok"
    for name, reason in [
        ("thin", "aspect ratio cap"),
        ("tall", "aspect ratio cap"),
        ("sparse", "bytes on disk, its header declares"),
        ("undeclared", "inbox.max_file_bytes"),
    ]:
        status, error, _ = rows[f"cam/{name}.bmp"]
        assert status == "failed" and error.startswith("too large") and reason in error, (name, error)
    sizes = dict(query_url(database_url, "SELECT source_path, size_bytes FROM results"))
    assert sizes["cam/sparse.bmp"] == 2_500_000_000
    # The whole daemon (torch included) stays far below what reading or resizing these would take.
    assert peak_mib < 1536, f"peak RSS {peak_mib:.0f} MiB"


# -- the crash-loop breaker ------------------------------------------------------------------------


def test_a_frame_that_kills_the_daemon_is_failed_after_3_crashes_and_innocents_are_not(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox" / "cam"
    for index in range(7):
        write_bmp(inbox / f"innocent-{index}.bmp", seed=index)
    write_bmp(inbox / "poison.bmp", seed=99)
    config = make_config(batch={"size": 8, "max_wait_ms": 50})
    poison = {POISON_ENV: "poison.bmp"}

    crashes = 0
    while True:
        result = _watch(config, "--once", env=poison)
        if result.returncode == 0:
            break
        assert result.returncode == -9, result.stderr
        crashes += 1
        assert crashes <= 3, "the poison frame was processed again after 3 crashes"

    assert crashes == 3
    rows = _rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")
    assert rows.pop("cam/poison.bmp")[:2] == ("failed", "crashed the daemon 3 times")
    assert {path: row[0] for path, row in rows.items()} == {f"cam/innocent-{i}.bmp": "ok" for i in range(7)}
    assert files_under(tmp_path / "inbox") == []
    assert (tmp_path / "failed" / "cam" / "poison.bmp").is_file()


def test_frames_left_by_a_clean_stop_are_not_suspects(tmp_path: Path) -> None:
    from watcher.intake.claiming import claim
    from watcher.intake.suspects import (
        LastStop,
        crashes_survived,
        mark_clean_stop,
        record_attempt,
        take_last_stop,
    )

    inbox, area = tmp_path / "inbox", tmp_path / "inbox" / ".in-progress" / "a"
    write_bmp(inbox / "x.bmp")
    area.mkdir(parents=True)
    frame = claim(inbox, area, PurePosixPath("x.bmp"))
    assert frame is not None
    assert crashes_survived(frame) == 1
    record_attempt(frame, 2)
    assert crashes_survived(frame) == 2
    mark_clean_stop(area)
    assert take_last_stop(area) is LastStop.CLEAN
    assert take_last_stop(area) is LastStop.CRASHED, "the mark is used once"
    # An adopter's clean stop: the frames are no suspects, yet the area's own instance crashed.
    mark_clean_stop(area, last=LastStop.HANDED_ON)
    assert take_last_stop(area) is LastStop.HANDED_ON
    assert take_last_stop(area) is LastStop.CRASHED, "that mark is used once too"
    assert crashes_survived(frame) == 2, "the marks leave the counts as they are"


@pytest.mark.parametrize("layout", ["a name in the area", "a folder of its own"])
def test_a_suspects_count_is_still_written_on_a_full_disk(tmp_path: Path, layout: str) -> None:
    # On a full disk a new file gets no block: a count written aside and renamed over the old one
    # could not be lowered back (a clean stop's undoing of an attempt that crashed nothing) nor
    # set to FAILED_UNOPENED, and a frame on its last try could then be failed as a crasher.
    from watcher.intake.claiming import claim
    from watcher.intake.suspects import (
        FAILED_UNOPENED,
        crashes_survived,
        failed_unopened,
        mark_failed_unopened,
        record_attempt,
    )

    disk = tmp_path / "disk"
    mount_tmpfs(disk, size="1m")
    try:
        inbox, area = disk / "inbox", disk / "inbox" / ".in-progress" / "a"
        # A name too long for the area's flat layout is claimed into a folder of its own.
        name = "x.bmp" if layout == "a name in the area" else f"{'n' * 240}.bmp"
        write_bmp(inbox / name, width=8, height=8)
        area.mkdir(parents=True)
        frame = claim(inbox, area, PurePosixPath(name))
        assert frame is not None
        assert frame.in_own_folder == (layout == "a folder of its own")
        write_bmp(inbox / "y.bmp", width=8, height=8)
        fresh = claim(inbox, area, PurePosixPath("y.bmp"))
        assert fresh is not None
        record_attempt(frame, 3)
        with (disk / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError) as full:
            while True:
                filler.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC

        record_attempt(frame, 2)  # the attempt crashed nothing: its count goes back
        assert crashes_survived(frame) == 2
        assert mark_failed_unopened(frame) is None
        assert failed_unopened(frame) and crashes_survived(frame) == FAILED_UNOPENED
        # A frame with no count yet has no file to write over: that still fails, and says so.
        with pytest.raises(OSError):
            record_attempt(fresh, 2)
        assert crashes_survived(fresh) == 1
        assert not [path for path in area.rglob("*.new")], "a half-made count left behind"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# -- the database file is the one it opened ---------------------------------------------------------


def _count_rows(database: Path) -> int:
    try:
        return query(database, "SELECT count(*) FROM results")[0][0]
    except sqlite3.OperationalError:
        return 0  # not there yet, or not migrated yet


def test_a_database_file_deleted_under_the_daemon_stops_it_before_anything_moves(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    database = tmp_path / "data" / "results.sqlite3"
    clean = {key: value for key, value in os.environ.items() if key not in (KILL_ENV, POISON_ENV)}
    with (tmp_path / "daemon.log").open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "watcher", "watch", "--config", str(config)],
            cwd=REPO, env=clean, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
    try:
        write_bmp(tmp_path / "inbox" / "cam" / "first.bmp", seed=1)
        wait_for(lambda: _count_rows(database) == 1, timeout=120, what="the first row")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        write_bmp(tmp_path / "inbox" / "cam" / "second.bmp", seed=2)
        assert daemon.wait(timeout=120) == 1
    finally:
        daemon.kill()
        daemon.wait()

    log = (tmp_path / "daemon.log").read_text()
    lines = [line for line in log.splitlines() if "cctv-gender: error" in line]
    assert len(lines) == 1 and "was removed while the daemon ran" in lines[0], lines
    assert "Traceback" not in log
    assert not (tmp_path / "processed" / "cam" / "second.bmp").exists(), "moved without a row"
    in_progress = files_under(tmp_path / "inbox" / ".in-progress")
    assert [path for path in in_progress if path.endswith("second.bmp")], in_progress


# -- moves that cannot half-happen -----------------------------------------------------------------


def test_processed_on_another_full_filesystem_with_long_names_finishes_once_space_returns(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    processed = tmp_path / "processed"
    mount_tmpfs(processed, size="256k")
    try:
        # Another filesystem: every move is a copy. Names of 250 bytes: `.<name>.moving` would not fit.
        names = [f"{index:02d}-{'n' * 240}.bmp" for index in range(40)]  # ~9 KB each, 360 KB in all
        daemon = start_daemon(inbox={"settle_ms": 0}, batch={"size": 8, "max_wait_ms": 50}).daemon
        for index, name in enumerate(names):
            write_bmp(tmp_path / "inbox" / "cam" / name, seed=index)
        wait_for(lambda: daemon.parked_frames > 0, timeout=120, what="the full disk to park a batch")

        subprocess.run(["mount", "-o", "remount,size=4m", str(processed)], check=True)

        database = tmp_path / "data" / "results.sqlite3"
        wait_for(lambda: len(files_under(processed)) == len(names) and daemon.parked_frames == 0,
                 timeout=120, what="every frame moved once space returned")  # fmt: skip
        rows = query(database, "SELECT source_path, status, stored_path FROM results")
        assert sorted(row[0] for row in rows) == sorted(f"cam/{name}" for name in names)
        assert all(status == "ok" and Path(stored).is_file() for _, status, stored in rows)
        assert files_under(processed) == sorted(f"cam/{name}" for name in names), "a copy left behind"
        wait_for(lambda: files_under(tmp_path / "inbox") == [], what="the claims released")
    finally:
        subprocess.run(["umount", "-l", str(processed)], check=False)  # lazily: the daemon stops after


def _make_socket(path: Path) -> None:
    import socket

    here = Path.cwd()
    os.chdir(path.parent)  # an AF_UNIX address holds 108 bytes: bind by the short relative name
    try:
        socket.socket(socket.AF_UNIX).bind(path.name)
    finally:
        os.chdir(here)


def test_special_and_unreadable_files_never_stop_moves_to_another_filesystem(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: tmpfs, mknod, chown, and setpriv to drop root's overrides")
    mount_tmpfs(tmp_path / "failed", size="8m")
    try:
        inbox = tmp_path / "inbox" / "cam"
        inbox.mkdir(parents=True)
        _make_socket(inbox / "socket.bmp")
        os.mkfifo(inbox / "fifo.bmp")
        os.mknod(inbox / "zero.bmp", 0o600 | 0o020000, os.makedev(1, 5))  # like /dev/zero: never ends
        secret = write_bmp(inbox / "secret.bmp", seed=1)  # an exporter's umask 077, another user
        os.chown(secret, 1000, 1000)
        secret.chmod(0o600)
        write_bmp(inbox / "good.bmp", seed=2)
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]

        result = _watch(make_config(), "--once", prefix=prefix, timeout=120)

        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        rows = _rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")
        assert rows.pop("cam/good.bmp")[0] == "ok"
        for name in ("socket", "fifo", "zero"):
            status, error, stored = rows.pop(f"cam/{name}.bmp")
            assert status == "failed" and "never opened" in error, (name, error)
            assert Path(stored).parent == tmp_path / "failed" / "cam" and os.path.lexists(stored)
        status, error, stored = rows.pop("cam/secret.bmp")
        assert status == "failed" and error.startswith("cannot read"), error
        assert Path(stored).is_file(), "the unreadable frame's row must say where it is"
        assert Path(stored).parent == tmp_path / "inbox" / ".in-progress" / ".unmovable"
        assert rows == {}
        status = subprocess.run(
            [sys.executable, "-m", "watcher", "status", "--config", str(tmp_path / "config.toml")],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert status.returncode == 1 and "1 frame could not be moved" in status.stdout, status.stdout
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "failed")], check=False)


def test_an_unreadable_frame_on_the_same_filesystem_is_renamed_not_linked(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: chown, and setpriv to drop root's overrides")
    # fs.protected_hardlinks: a file the daemon neither owns nor may read cannot be hard-linked.
    secret = write_bmp(tmp_path / "inbox" / "cam" / "secret.bmp", seed=1)
    os.chown(secret, 1000, 1000)
    secret.chmod(0o600)
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]

    result = _watch(make_config(), "--once", prefix=prefix)

    assert result.returncode == 0, result.stderr
    status, error, stored = _rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")["cam/secret.bmp"]
    assert status == "failed" and error.startswith("cannot read")
    assert Path(stored) == tmp_path / "failed" / "cam" / "secret.bmp" and Path(stored).is_file()


def _remove_tree(top: Path) -> None:
    """rm -r without recursion: Python 3.11's rmtree (pytest's clean-up of old tmp_paths too)
    recurses once per level, and a tree a thousand levels deep would end it."""
    folders, stack = [], [os.fsencode(top)]
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


@pytest.fixture
def deep_trees(tmp_path: Path) -> Iterator[None]:
    yield
    for top in (tmp_path / "inbox" / "deep", tmp_path / "processed" / "deep"):
        if top.exists():
            _remove_tree(top)


@pytest.mark.usefixtures("deep_trees")
def test_deep_nesting_and_paths_over_path_max(make_config: Callable[..., Path], tmp_path: Path) -> None:
    from watcher.intake.moving import make_folders

    inbox = tmp_path / "inbox"
    deep = inbox.joinpath("deep", *["d"] * 1000)  # 2 bytes a level: legal, and deeper than recursion goes
    make_folders(deep)
    write_bmp(deep / "x.bmp", seed=1)
    # A folder that can still be listed, holding a name that takes the whole path over PATH_MAX:
    # only a writer that walks down (chdir) can make it, and nothing can open it by its path.
    here = Path.cwd()
    os.chdir(inbox)
    try:
        remaining = 3950 - len(os.fsencode(inbox))
        while remaining > 0:  # each level adds "/" and its name; never leave a lone "/" to fill
            part = remaining - 1 if remaining <= 251 else (249 if remaining == 252 else 250)
            os.mkdir("n" * part)
            os.chdir("n" * part)
            remaining -= part + 1
        assert len(os.fsencode(Path.cwd())) == 3950  # listable; with the name below, over 4095
        Path("f" * 240 + ".bmp").write_bytes(bmp_bytes(seed=2))
    finally:
        os.chdir(here)
    write_bmp(inbox / "cam" / "good.bmp", seed=3)

    result = _watch(make_config(), "--once")

    assert result.returncode == 0, result.stderr
    rows = _rows(f"sqlite:///{tmp_path / 'data' / 'results.sqlite3'}")
    assert rows["cam/good.bmp"][0] == "ok"
    deep_row = rows["/".join(["deep", *["d"] * 1000, "x.bmp"])]
    assert deep_row[0] == "ok" and Path(deep_row[2]).is_file()
    assert "longer than PATH_MAX: it cannot be opened" in result.stderr
    assert "left in the inbox for the next run" not in result.stderr
    assert len(rows) == 2


def test_an_output_folder_vanishing_mid_batch_parks_it_until_it_returns(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.pipeline.classifying import Classifier

    processed, away = tmp_path / "processed", tmp_path / "unmounted"
    original = Classifier.classify

    def classify_then_unmount(self: Classifier, *args: Any, **kwargs: Any) -> Any:
        classified = original(self, *args, **kwargs)
        if processed.exists():
            processed.rename(away)  # the share goes away while the batch is in flight
        return classified

    monkeypatch.setattr(Classifier, "classify", classify_then_unmount)
    # Written before the start, so that the first scan claims all three into one batch.
    for index in range(3):
        write_bmp(tmp_path / "inbox" / "cam" / f"{index}.bmp", seed=index)
    daemon = start_daemon(inbox={"settle_ms": 0, "rescan_interval_s": 0.2}).daemon

    wait_for(lambda: daemon.parked_frames == 3, what="the batch to wait for processed/")
    assert not processed.exists(), "processed/ must never be made again (it would land on the wrong disk)"
    monkeypatch.setattr(Classifier, "classify", original)
    away.rename(processed)

    wait_for(lambda: len(files_under(processed)) == 3 and daemon.parked_frames == 0, what="the moves")
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, status FROM results")
    assert sorted(rows) == [(f"cam/{index}.bmp", "ok") for index in range(3)]


def test_names_of_a_batch_whose_moves_waited_are_free_again_once_it_moved(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.pipeline import processing

    processed, away = tmp_path / "processed", tmp_path / "unmounted"

    def unmount_after_the_commit(step: str) -> None:
        if step == "committed" and processed.exists():
            processed.rename(away)  # rows committed, then the share goes: the moves must wait

    monkeypatch.setattr(processing, "kill_point", unmount_after_the_commit)
    names = [f"{index}.bmp" for index in range(3)]
    for index, name in enumerate(names):  # before the start: one batch of three
        write_bmp(tmp_path / "inbox" / name, seed=index)
    daemon = start_daemon(inbox={"settle_ms": 0, "rescan_interval_s": 0.2}).daemon
    wait_for(lambda: daemon.parked_frames == 3, what="the committed batch to wait for processed/")
    monkeypatch.setattr(processing, "kill_point", lambda _step: None)
    away.rename(processed)
    daemon.wake()
    wait_for(lambda: files_under(processed) == names, what="the moves once processed/ returned")

    # Retention clears processed/; the cameras send the same names again. Names held back for
    # the waiting moves must be free now, or these would land as 0-1.bmp and so on.
    for name in names:
        (processed / name).unlink()
    for index, name in enumerate(names):
        write_bmp(tmp_path / "inbox" / name, seed=10 + index)
    wait_for(lambda: len(files_under(processed)) == 3, what="the second frames' moves")
    assert files_under(processed) == names


@pytest.mark.parametrize("kind", ["garbage_database_file", "data_is_a_file"])
def test_a_broken_database_location_is_one_line_not_a_traceback(
    make_config: Callable[..., Path], tmp_path: Path, kind: str
) -> None:
    if kind == "garbage_database_file":
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "results.sqlite3").write_bytes(b"this is not a database" * 100)
    else:
        (tmp_path / "data").write_bytes(b"a file where the data folder should be")

    result = _watch(make_config(), "--once")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    said = {
        "garbage_database_file": "cctv-gender: error: cannot open the database",
        "data_is_a_file": f"cctv-gender: error: {tmp_path / 'data'} is a file, not a folder",
    }
    assert result.stderr.strip().splitlines()[-1].startswith(said[kind])


def test_a_database_file_deleted_while_a_commit_waits_for_the_lock_moves_nothing(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    import sqlite3 as sqlite
    import threading

    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon
    from watcher.store.file_guard import DatabaseFileReplaced

    daemon = build_daemon(
        load_config(make_config(database={"busy_timeout_ms": 60_000})), stop=threading.Event()
    )
    thread, outcome = _running_until_it_raises(daemon)
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    database = tmp_path / "data" / "results.sqlite3"
    holder = sqlite.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer: the batch's BEGIN IMMEDIATE waits for it
    try:
        write_bmp(tmp_path / "inbox" / "cam" / "waiting.bmp", seed=1)
        # The tiny model takes milliseconds: a batch in flight for a second waits for the lock.
        wait_for(lambda: (daemon.in_flight_seconds or 0) > 1.0, what="the commit waiting for the lock")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    thread.join(timeout=60)

    assert not thread.is_alive() and len(outcome) == 1 and isinstance(outcome[0], DatabaseFileReplaced)
    assert files_under(tmp_path / "processed") == [], "moved while its row went into a deleted file"
    assert [path for path in files_under(tmp_path / "inbox") if path.endswith("waiting.bmp")]


def test_a_write_ahead_log_removed_under_the_daemon_stops_it_before_anything_moves(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    import threading

    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon
    from watcher.store.file_guard import DatabaseFileReplaced

    # `rm results.sqlite3-wal`, a folk cure for a locked database: the daemon's connections would
    # go on committing into the unlinked log, rows nobody reads again, their files moved.
    stop = threading.Event()
    daemon = build_daemon(load_config(make_config()), stop=stop)
    thread, outcome = _running_until_it_raises(daemon)
    try:
        write_bmp(tmp_path / "inbox" / "cam" / "first.bmp", seed=1)
        wait_for(lambda: files_under(tmp_path / "processed") == ["cam/first.bmp"], what="the first frame")
        Path(f"{tmp_path / 'data' / 'results.sqlite3'}-wal").unlink()
        write_bmp(tmp_path / "inbox" / "cam" / "second.bmp", seed=2)
        thread.join(timeout=60)
    finally:
        stop.set()
        daemon.wake()
        thread.join(timeout=60)

    assert len(outcome) == 1 and isinstance(outcome[0], DatabaseFileReplaced), outcome
    assert "lost its write-ahead log" in str(outcome[0])
    assert files_under(tmp_path / "processed") == ["cam/first.bmp"], "moved while its row went nowhere"
    assert [path for path in files_under(tmp_path / "inbox") if path.endswith("second.bmp")]


def test_a_table_locked_on_postgresql_parks_the_batch_instead_of_blocking(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, postgres_url: str
) -> None:
    from sqlalchemy import create_engine, text

    daemon = start_daemon(database={"url": postgres_url, "busy_timeout_ms": 300}).daemon
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    locker = create_engine(postgres_url).connect()
    transaction = locker.begin()
    locker.execute(text("LOCK TABLE results IN ACCESS EXCLUSIVE MODE"))  # VACUUM FULL, say
    try:
        write_bmp(tmp_path / "inbox" / "cam" / "x.bmp", seed=1)
        wait_for(lambda: daemon.parked_frames == 1, what="the batch parked after lock_timeout")
    finally:
        transaction.rollback()
        locker.close()
    wait_for(lambda: query_url(postgres_url, "SELECT count(*) FROM results")[0][0] == 1, what="the row")
    wait_for(lambda: files_under(tmp_path / "processed") == ["cam/x.bmp"], what="the move")


def test_a_clean_stop_whose_last_heartbeat_was_lost_is_not_a_crash(tmp_path: Path) -> None:
    from watcher.service.heartbeat import Heartbeat, Progress
    from watcher.store.engine import make_engine
    from watcher.store.migrate import upgrade_to_head

    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite3'}", busy_timeout_ms=1000)
    upgrade_to_head(engine)
    Heartbeat(engine, instance="a").beat(Progress(3, 0, 0, 0.0, "zero-shot"), force=True)  # then stopped,
    # its `stopped` beat refused by a locked database: the row still says `running`
    assert Heartbeat(engine, instance="a").record_start(stopped_cleanly=True) is False
    assert query(tmp_path / "r.sqlite3", "SELECT crashes FROM instances") == [(0,)]
    assert Heartbeat(engine, instance="a").record_start() is True  # without the mark: a crash


def test_a_database_inside_the_inbox_is_refused(tmp_path: Path) -> None:
    from watcher.config import ConfigError, load_config

    for database in ("sqlite:///inbox/cam/db.bmp", ""):
        sections: dict[str, dict[str, object]] = {"database": {"url": database}}
        if not database:
            sections["paths"] = {"data": "inbox/state"}
        config = write_config(tmp_path / "config.toml", sections)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="must not be inside paths.inbox"):
            load_config(config)


def test_a_uri_form_sqlite_url_is_guarded_and_makes_no_stray_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.store.engine import make_engine
    from watcher.store.file_guard import DatabaseFileGuard, DatabaseFileReplaced
    from watcher.store.migrate import upgrade_to_head
    from watcher.store.opening import _make_sqlite_folder

    monkeypatch.chdir(tmp_path)
    database = tmp_path / "state" / "results.sqlite3"
    url = f"sqlite:///file:{database}?uri=true"
    _make_sqlite_folder(url)
    assert database.parent.is_dir() and not (tmp_path / "file:").exists()
    engine = make_engine(url, busy_timeout_ms=1000)
    upgrade_to_head(engine)
    guard = DatabaseFileGuard(engine)
    guard.check()
    database.unlink()
    with pytest.raises(DatabaseFileReplaced, match="was removed"):
        guard.check()


def test_an_export_held_open_in_a_pager_never_delays_the_daemon(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    daemon = start_daemon(database={"busy_timeout_ms": 1000}).daemon
    wait_for(lambda: daemon.turns > 0, what="the loop to start")
    database = tmp_path / "data" / "results.sqlite3"
    with sqlite3.connect(database) as connection:  # megabytes of CSV: far more than a pipe holds
        connection.executemany(
            "INSERT INTO results (frame_key, source_path, stored_path, received_at, processed_at, status) "
            "VALUES (?, ?, '/x', '2026-11-25 08:00:00', '2026-11-25 08:00:01', 'ok')",
            [(f"old-{index}", f"cam/old-{index:06d}.bmp") for index in range(20_000)],
        )
    # `cctv-gender results --format csv | less`, and nobody pages: it blocks writing, mid-export.
    export = ["results", "--format", "csv", "--config", str(tmp_path / "config.toml")]
    pager = subprocess.Popen(
        [sys.executable, "-m", "watcher", *export],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert pager.stdout is not None and pager.stdout.read(16_384).count(b"\n") > 10
        for index in range(3):
            write_bmp(tmp_path / "inbox" / "cam" / f"new-{index}.bmp", seed=index)
        wait_for(
            lambda: len(files_under(tmp_path / "processed")) == 3, timeout=30, what="3 new frames stored"
        )
        assert pager.poll() is None, "the export finished early: the test proved nothing"
    finally:
        pager.kill()
        pager.wait(timeout=30)
        if pager.stdout is not None:
            pager.stdout.close()
    rows = query(database, "SELECT count(*) FROM results WHERE source_path LIKE 'cam/new-%'")
    assert rows == [(3,)]


def _running_until_it_raises(daemon: Any) -> tuple[threading.Thread, list[BaseException]]:
    """`daemon.run()` on a thread of its own, and the list that gets what it raised, if anything."""
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as error:  # noqa: BLE001 - the test reads it
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome
