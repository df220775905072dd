from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path, PurePosixPath

import pytest

from model.images import incomplete_reason
from model.synthetic import bmp_bytes
from tests.helpers import wait_for
from watcher.intake.discovery import UnlistedFolders, camera_of, is_candidate_name, scan_inbox
from watcher.intake.readiness import ReadinessTracker, Verdict, declared_bmp_size
from watcher.pipeline.claims import Claims
from watcher.pipeline.file_work import ClaimOutcome, claim_outcome, claim_share


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("x.bmp", True, id="bmp"),
        pytest.param("X.BMP", True, id="upper_case"),
        pytest.param("frame 01 é.Bmp", True, id="spaces_unicode"),
        pytest.param(".x.bmp", False, id="dotfile"),
        pytest.param("~x.bmp", False, id="tilde_temp"),
        pytest.param("x.bmp.part", False, id="part"),
        pytest.param("x.bmp.tmp", False, id="tmp"),
        pytest.param("x.png", False, id="other_format"),
        pytest.param("bmp", False, id="bare_word"),
    ],
)
def test_candidate_names(name: str, expected: bool) -> None:
    assert is_candidate_name(name) is expected


def test_scan_skips_hidden_folders_and_finds_cameras(tmp_path: Path) -> None:
    for relative in (
        "a.bmp",
        "cam-07/b.BMP",
        "cam-07/night/c.bmp",
        ".in-progress/k/d.bmp",
        "cam-07/.e.bmp",
        "f.txt",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")

    found = sorted(str(path) for path in scan_inbox(tmp_path))

    assert found == ["a.bmp", "cam-07/b.BMP", "cam-07/night/c.bmp"]
    assert camera_of(PurePosixPath("cam-07/night/c.bmp")) == "cam-07"
    assert camera_of(PurePosixPath("a.bmp")) is None


def test_declared_size_is_read_from_the_header(tmp_path: Path) -> None:
    data = bmp_bytes(width=10, height=7)
    (tmp_path / "x.bmp").write_bytes(data[:20])
    (tmp_path / "y.bmp").write_bytes(b"PNG-ish")

    assert declared_bmp_size(tmp_path / "x.bmp") == len(data)
    assert declared_bmp_size(tmp_path / "y.bmp") is None


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_a_partial_frame_is_incomplete_however_long_it_has_been_stable(tmp_path: Path) -> None:
    data = bmp_bytes()
    path = tmp_path / "x.bmp"
    path.write_bytes(data[: len(data) // 2])
    _age(path, 10)
    tracker = ReadinessTracker(settle_s=0.5, timeout_s=60)

    assert tracker.assess(tmp_path, PurePosixPath("x.bmp")) == Verdict.INCOMPLETE

    path.write_bytes(data)
    assert tracker.assess(tmp_path, PurePosixPath("x.bmp")) == Verdict.SETTLING
    _age(path, 1)
    assert tracker.assess(tmp_path, PurePosixPath("x.bmp")) == Verdict.READY


def test_an_incomplete_frame_times_out_as_truncated(tmp_path: Path) -> None:
    data = bmp_bytes()
    path = tmp_path / "x.bmp"
    path.write_bytes(data[:100])
    _age(path, 120)

    assessment = ReadinessTracker(settle_s=0, timeout_s=60).assess(tmp_path, PurePosixPath("x.bmp"))

    assert assessment == Verdict.TIMED_OUT
    assert incomplete_reason(path.read_bytes()) == f"truncated: 100 of {len(data)} declared bytes"


def test_an_empty_file_waits_then_times_out(tmp_path: Path) -> None:
    path = tmp_path / "x.bmp"
    path.write_bytes(b"")
    tracker = ReadinessTracker(settle_s=0, timeout_s=60)
    assert tracker.assess(tmp_path, PurePosixPath("x.bmp")) == Verdict.INCOMPLETE

    _age(path, 61)
    assessment = tracker.assess(tmp_path, PurePosixPath("x.bmp"))
    assert assessment == Verdict.TIMED_OUT
    assert incomplete_reason(b"") == "truncated: empty file (0 bytes)"


def test_special_files_and_vanished_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.bmp")
    (tmp_path / "link.bmp").symlink_to(tmp_path / "elsewhere.bmp")
    tracker = ReadinessTracker(settle_s=0, timeout_s=60)

    assert tracker.assess(tmp_path, PurePosixPath("pipe.bmp")) == Verdict.SPECIAL
    assert tracker.assess(tmp_path, PurePosixPath("link.bmp")) == Verdict.SPECIAL
    assert tracker.assess(tmp_path, PurePosixPath("gone.bmp")) == Verdict.GONE


def test_a_name_whose_folder_became_a_file_or_a_link_loop_is_gone(tmp_path: Path) -> None:
    # Waiting for these (INCOMPLETE, no time kept) kept the name, and the waiting count, forever.
    (tmp_path / "cam").write_bytes(b"a file where the camera's folder was")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    tracker = ReadinessTracker(settle_s=0, timeout_s=60)

    assert tracker.assess(tmp_path, PurePosixPath("cam/x.bmp")) == Verdict.GONE  # ENOTDIR
    assert tracker.assess(tmp_path, PurePosixPath("loop-a/x.bmp")) == Verdict.GONE  # ELOOP


def test_a_non_bmp_is_taken_once_stable(tmp_path: Path) -> None:
    path = tmp_path / "x.bmp"
    path.write_bytes(b"this is not a bitmap at all")
    _age(path, 5)
    assert (
        ReadinessTracker(settle_s=1, timeout_s=60).assess(tmp_path, PurePosixPath("x.bmp")) == Verdict.READY
    )


def test_a_frame_its_writer_closed_needs_no_settling(tmp_path: Path) -> None:
    path = tmp_path / "x.bmp"
    path.write_bytes(bmp_bytes())
    tracker = ReadinessTracker(settle_s=60, timeout_s=600)
    relative = PurePosixPath("x.bmp")
    assert tracker.assess(tmp_path, relative) == Verdict.SETTLING

    tracker.writers_finished(tmp_path, {relative})
    assert tracker.assess(tmp_path, relative) == Verdict.READY


def test_a_close_mark_goes_stale_when_the_file_is_written_again(tmp_path: Path) -> None:
    data = bmp_bytes()
    path = tmp_path / "x.bmp"
    path.write_bytes(data)
    tracker = ReadinessTracker(settle_s=60, timeout_s=600)
    relative = PurePosixPath("x.bmp")
    tracker.writers_finished(tmp_path, {relative})

    # Reopened and rewritten since the close: settling decides again.
    path.write_bytes(data + b"trailing")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert tracker.assess(tmp_path, relative) == Verdict.SETTLING


def test_a_closed_but_short_frame_is_still_incomplete(tmp_path: Path) -> None:
    # A writer that closes between chunks: the header's declared size still rules.
    data = bmp_bytes()
    path = tmp_path / "x.bmp"
    path.write_bytes(data[: len(data) // 2])
    tracker = ReadinessTracker(settle_s=0, timeout_s=600)
    tracker.writers_finished(tmp_path, {PurePosixPath("x.bmp")})
    assert tracker.assess(tmp_path, PurePosixPath("x.bmp")) == Verdict.INCOMPLETE


@pytest.mark.parametrize("file_processes", [False, True], ids=["threads", "file_processes"])
def test_files_that_cannot_be_looked_at_wait_and_are_said_once_a_folder_after_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, file_processes: bool
) -> None:
    # An I/O error on an inode (a failing disk, a stale NFS handle) cannot be made here, nor a
    # folder's search permission taken away from root: lstat is made to fail for cam/'s files.
    # With file processes the names are looked at by claim_share, run here in-process so that
    # the failing lstat reaches it (a real worker process would not see the monkeypatch).
    inbox, area = tmp_path / "inbox", tmp_path / "area"
    area.mkdir()
    for relative in ("cam/a.bmp", "cam/b.bmp", "cam/c.bmp", "other/d.bmp"):
        (inbox / relative).parent.mkdir(parents=True, exist_ok=True)
        (inbox / relative).write_bytes(bmp_bytes())
        _age(inbox / relative, 10)
    lstat = Path.lstat

    def failing(self: Path) -> os.stat_result:
        if self.parent == inbox / "cam" and self.suffix == ".bmp":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        return lstat(self)

    def in_bulk(names: list[tuple[PurePosixPath, tuple[int, int] | None]]) -> list[ClaimOutcome]:
        answers = claim_share(
            inbox, area, [(str(name), mark) for name, mark in names], settle_s=0, timeout_s=0.2
        )
        return [claim_outcome(name, answer) for (name, _mark), answer in zip(names, answers, strict=True)]

    monkeypatch.setattr(Path, "lstat", failing)
    claims = Claims(
        inbox=inbox,
        area=area,
        readiness=ReadinessTracker(settle_s=0, timeout_s=0.2),
        stop=threading.Event(),
        bulk=in_bulk if file_processes else None,
    )
    claimed: list[str] = []

    def turn() -> None:
        claims.rescan()
        claims.claim_ready(lambda frame: claimed.append(str(frame.relative)))

    def said() -> list[str]:
        return [
            record.getMessage() for record in caplog.records if record.getMessage().startswith("cannot look")
        ]

    wait_for(lambda: turn() or said())
    for _ in range(5):
        turn()
    assert len(said()) == 1, "one line for the folder, said once"
    assert "3 files" in said()[0] and str(inbox / "cam") in said()[0] and "(Input/output error)" in said()[0]
    assert [record.levelname for record in caplog.records if record.getMessage() in said()] == ["WARNING"]
    assert claimed == ["other/d.bmp"] and claims.waiting == 3, "the others wait; the readable one went"
    # Frames still coming into the folder (the camera writes on) are not news, however long
    # they wait: no line each.
    (inbox / "cam" / "e.bmp").write_bytes(bmp_bytes())
    turn()
    assert claims.waiting == 4
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # past e.bmp's own timeout (0.2 s): said, it would be now
        turn()
    assert len(said()) == 1

    monkeypatch.setattr(Path, "lstat", lstat)  # readable again: they go on their way
    turn()
    assert sorted(claimed) == ["cam/a.bmp", "cam/b.bmp", "cam/c.bmp", "cam/e.bmp", "other/d.bmp"]
    assert claims.waiting == 0


def test_a_file_looked_at_again_starts_its_wait_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Looked at once between two failing stretches (a flapping NFS mount): its second stretch is
    # said only after a timeout of its own, and said again, since the folder was news again.
    path = tmp_path / "cam" / "x.bmp"
    path.parent.mkdir()
    path.write_bytes(bmp_bytes())
    _age(path, 10)
    lstat, failing_now = Path.lstat, [True]

    def failing(self: Path) -> os.stat_result:
        if self == path and failing_now[0]:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), str(self))
        return lstat(self)

    monkeypatch.setattr(Path, "lstat", failing)
    tracker, relative = ReadinessTracker(settle_s=0, timeout_s=1), PurePosixPath("cam/x.bmp")

    def said() -> int:
        return sum(message.startswith("cannot look") for message in caplog.messages)

    def turn() -> Verdict:
        verdict = tracker.assess(tmp_path, relative)
        tracker.say_unlooked(tmp_path)
        return verdict

    wait_for(lambda: turn() == Verdict.INCOMPLETE and said() == 1)
    failing_now[0] = False
    assert turn() == Verdict.READY  # looked at (not claimed): the wait is over
    failing_now[0] = True
    started = time.monotonic()
    assert turn() == Verdict.INCOMPLETE and said() == 1, "not said at once: its wait starts now"
    wait_for(lambda: turn() == Verdict.INCOMPLETE and said() == 2)
    assert time.monotonic() - started >= 1


def test_a_folder_that_cannot_be_listed_is_said_once_until_it_can_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A `lost+found` at the inbox's mount root, which the daemon's user may not enter: warned
    # about at every rescan, it was a line every rescan_interval_s for good. Root may enter
    # any folder, so the listing is made to fail.
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "a.bmp").write_bytes(b"x")
    scandir, refused = os.scandir, [True]

    def scandir_refusing(path: Path) -> object:
        if Path(path).name == "lost+found" and refused[0]:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_refusing)
    caplog.set_level(logging.DEBUG, logger="watcher.intake.discovery")
    unlisted = UnlistedFolders()

    def scan() -> list[str]:
        return [str(relative) for relative in scan_inbox(tmp_path, unlisted=unlisted)]

    for _ in range(3):
        assert scan() == ["cam/a.bmp"]
    refused[0] = False
    assert scan() == ["cam/a.bmp"]
    refused[0] = True
    assert scan() == ["cam/a.bmp"]  # refused again after it was listed: news again
    (tmp_path / "lost+found").rmdir()
    assert scan() == ["cam/a.bmp"]
    (tmp_path / "lost+found").mkdir()
    assert scan() == ["cam/a.bmp"]  # made again after it was gone, and refused: news again
    levels = [record.levelno for record in caplog.records if record.getMessage().startswith("cannot list")]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG, logging.WARNING, logging.WARNING]
    list(scan_inbox(tmp_path))  # kept by no one (a status probe): said each time
    assert [record.levelno for record in caplog.records][-1] == logging.WARNING
