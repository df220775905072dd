"""The inbox folder replaced under a running daemon (`mv inbox inbox.old && mkdir inbox`, a share
mounted over it): the frames it had claimed into the old inbox's in-progress area are brought
over into the new one's and end in processed/, once each, their rows saying where; where they
cannot come over (another filesystem), the daemon stops with one line saying where they are."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import RunningDaemon, files_under, mount_tmpfs, query, wait_for
from watcher.errors import StartupError
from watcher.intake.claiming import claim
from watcher.service.instance import acquire_instance

LONG = "y" * 240 + ".bmp"  # too long for one name in the area: claimed in a folder of its own


def _replace(inbox: Path) -> None:
    old = inbox.with_name("inbox.old")
    if not old.exists():
        inbox.rename(old)
        inbox.mkdir()


@pytest.fixture
def replace_when(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """The inbox replaced at the moment the test names: its batch read and classified, its rows
    committed, or its first file being moved."""
    from watcher.intake.placement import move_frame
    from watcher.pipeline import file_work, processing
    from watcher.pipeline.classifying import Classifier

    inbox = tmp_path / "inbox"
    if request.param == "read":
        classify = Classifier.classify

        def classify_then_replace(self: Classifier, *args: Any, **kwargs: Any) -> Any:
            classified = classify(self, *args, **kwargs)
            _replace(inbox)
            return classified

        monkeypatch.setattr(Classifier, "classify", classify_then_replace)
    elif request.param == "committed":
        monkeypatch.setattr(
            processing, "kill_point", lambda step: _replace(inbox) if step == "committed" else None
        )
    else:

        def replace_then_move(*args: Any, **kwargs: Any) -> Path:
            _replace(inbox)
            return move_frame(*args, **kwargs)

        monkeypatch.setattr(file_work, "move_frame", replace_then_move)
    yield


@pytest.mark.parametrize(
    ("replace_when", "file_processes"),
    [
        pytest.param("read", 0, id="read"),
        pytest.param("read", 2, id="read-file-processes"),
        pytest.param("committed", 0, id="committed"),
        pytest.param("committed", 2, id="committed-file-processes"),
        pytest.param("moving", 0, id="moving"),
    ],
    indirect=["replace_when"],
)
def test_frames_claimed_before_the_inbox_was_replaced_end_where_their_rows_say(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    replace_when: None,
    file_processes: int,
) -> None:
    caplog.set_level(logging.INFO)
    inbox, old = tmp_path / "inbox", tmp_path / "inbox.old"
    data = {
        f"cam/{name}": bmp_bytes(width=16, height=16, seed=index)
        for index, name in enumerate(["0.bmp", "1.bmp", LONG])
    }
    for relative, content in data.items():
        (inbox / relative).parent.mkdir(parents=True, exist_ok=True)
        (inbox / relative).write_bytes(content)
    start_daemon(
        inbox={"settle_ms": 0, "rescan_interval_s": 0.2},
        batch={"size": 8, "max_wait_ms": 50, "file_processes": file_processes},
    )
    database = tmp_path / "data" / "results.sqlite3"

    def settled() -> bool:
        rows = query(database, "SELECT count(*) FROM results")[0][0] if database.exists() else 0
        return (
            old.exists()
            and rows == 3
            and len(files_under(tmp_path / "processed")) == 3
            and not files_under(inbox)
        )

    wait_for(settled, timeout=60, what="three rows, three files in processed/, the new inbox empty")
    rows = query(database, "SELECT source_path, stored_path, sha256, status FROM results")
    for source, stored, sha256, status in rows:
        assert status == "ok", source
        assert (
            hashlib.sha256(Path(stored).read_bytes()).hexdigest()
            == sha256
            == hashlib.sha256(data[source]).hexdigest()
        )
    assert [path for path in files_under(old) if not path.endswith(".lock")] == []


def test_claims_that_cannot_come_over_to_another_filesystem_stop_the_daemon_saying_where_they_are(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    held = acquire_instance(inbox / ".in-progress", name="a")
    write_bmp(tmp_path / "staging" / "x.bmp")
    frame = claim(tmp_path / "staging", held.area, PurePosixPath("x.bmp"))
    assert frame is not None
    inbox.rename(tmp_path / "inbox.old")
    mount_tmpfs(inbox, size="1m")  # a share mounted where the inbox was
    try:
        assert not held.in_place()
        with pytest.raises(StartupError, match=r"another filesystem .*inbox\.old/\.in-progress/a\)"):
            held.keep()
        assert frame.work_path.name in {
            path.name for path in (tmp_path / "inbox.old" / ".in-progress" / "a").iterdir()
        }
    finally:
        held.release()
        subprocess.run(["umount", "-l", str(inbox)], check=False)


def test_a_dead_instances_frame_adopted_and_waiting_comes_over_too(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    inbox = tmp_path / "inbox"
    running = start_daemon(inbox={"mode": "events", "rescan_interval_s": 0.2, "settle_ms": 0})
    away = running.take_away(tmp_path / "processed", caplog)  # the adopted frame waits for it
    dead = acquire_instance(inbox / ".in-progress", name="deadnode")
    write_bmp(tmp_path / "staging" / "x.bmp")
    assert claim(tmp_path / "staging", dead.area, PurePosixPath("x.bmp")) is not None
    dead.release()
    wait_for(lambda: running.daemon.parked_frames == 1, what="the dead instance's frame adopted, waiting")

    _replace(inbox)
    wait_for(
        lambda: "into " + str(inbox / ".in-progress" / "deadnode") in caplog.text,
        what="its claim brought over",
    )
    away.rename(tmp_path / "processed")
    database = tmp_path / "data" / "results.sqlite3"
    wait_for(
        lambda: files_under(tmp_path / "processed") == ["x.bmp"] and not files_under(inbox), what="its move"
    )
    assert query(database, "SELECT stored_path, status FROM results") == [
        (str(tmp_path / "processed" / "x.bmp"), "ok")
    ]


def test_a_locked_database_when_the_claims_come_over_parks_them_instead_of_stopping_the_daemon(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A frame moved to x-1.bmp (its name taken) whose row correction meets a locked database: its
    # batch parks, its note in the area. The inbox replaced then: bringing the claims over must
    # not stop the daemon on that same locked database (a transient error everywhere else).
    from watcher.intake.placement import move_frame as real_move
    from watcher.pipeline import file_work

    caplog.set_level(logging.INFO)
    inbox = tmp_path / "inbox"
    database = tmp_path / "data" / "results.sqlite3"
    other = b"another frame's file, which took the reserved name"
    lock: list[sqlite3.Connection] = []

    def taken_then_locked(frame: Any, stored: Path, **options: Any) -> Path:
        if not lock:
            stored.write_bytes(other)
            lock.append(sqlite3.connect(database, isolation_level=None, check_same_thread=False))
            lock[0].execute("BEGIN IMMEDIATE")  # another writer holds the database
        return real_move(frame, stored, **options)

    monkeypatch.setattr(file_work, "move_frame", taken_then_locked)
    data = bmp_bytes(width=16, height=16, seed=1)
    (inbox / "cam").mkdir(parents=True)
    (inbox / "cam" / "x.bmp").write_bytes(data)
    running = start_daemon(
        inbox={"settle_ms": 0, "rescan_interval_s": 0.2},
        batch={"size": 8, "max_wait_ms": 50, "file_processes": 0},
        database={"busy_timeout_ms": 200},
    )
    wait_for(lambda: running.daemon.parked_frames == 1, what="the batch parked on the locked database")
    _replace(inbox)
    wait_for(
        lambda: "cannot finish what came over" in caplog.text or not running.thread.is_alive(),
        what="the claims brought over, their note's row locked",
    )
    assert running.thread.is_alive(), "the daemon stopped on a locked database"
    lock[0].execute("ROLLBACK")
    lock[0].close()
    wait_for(
        lambda: (
            running.thread.is_alive()
            and query(database, "SELECT stored_path FROM results")
            == [(str(tmp_path / "processed" / "cam" / "x-1.bmp"),)]
        ),
        timeout=60,
        what="the row saying x-1.bmp, the daemon running",
    )
    assert (tmp_path / "processed" / "cam" / "x.bmp").read_bytes() == other
    assert (tmp_path / "processed" / "cam" / "x-1.bmp").read_bytes() == data
    assert files_under(inbox) == []


def test_a_lock_file_removed_by_hand_is_taken_again_without_stopping_the_daemon(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only the lock file goes (a cleanup of old files, an operator's rm): the area is where it
    # was, its claims with it. There is nothing to bring over, and no reason to stop.
    from watcher.pipeline.recording import Recorder
    from watcher.store.errors import StorageUnavailable

    record, locked = Recorder.record, [True]

    def locked_for_now(self: Recorder, classified: list[Any]) -> Any:
        if locked:
            raise StorageUnavailable("database is locked")
        return record(self, classified)

    monkeypatch.setattr(Recorder, "record", locked_for_now)
    caplog.set_level(logging.INFO)
    inbox = tmp_path / "inbox"
    data = bmp_bytes(width=16, height=16, seed=1)
    (inbox / "cam").mkdir(parents=True)
    (inbox / "cam" / "x.bmp").write_bytes(data)
    running = start_daemon(inbox={"settle_ms": 0, "rescan_interval_s": 0.2})
    wait_for(lambda: running.daemon.parked_frames == 1, what="the frame claimed, its batch parked")
    (running.daemon.instance.area.parent / f"{running.daemon.instance.name}.lock").unlink()
    wait_for(lambda: "taken again" in caplog.text, what="the lock taken again")
    running.turns_from_now(2)
    assert running.thread.is_alive(), "the daemon stopped"
    locked.clear()
    wait_for(lambda: files_under(tmp_path / "processed") == ["cam/x.bmp"], what="the frame's move")
    assert files_under(inbox) == []
    assert running.thread.is_alive()
