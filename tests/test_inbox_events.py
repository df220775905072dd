"""The inbox's events read straight from inotify: real kernel events in tmp_path, the queue's
overflow included, and the parsing of whatever names a camera's exporter writes."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.synthetic import write_bmp
from tests.helpers import wait_for
from watcher.intake.discovery import scan_inbox
from watcher.intake.events import EventBatch, InboxEvents
from watcher.intake.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Event,
    Inotify,
    parse_events,
)


def pack_event(watch: int, mask: int, name: bytes = b"") -> bytes:
    """One event as the kernel writes it (struct inotify_event): its name NUL-terminated and
    padded to a multiple of 16 bytes."""
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", watch, mask, 0, len(padded)) + padded


# A file name as Linux allows it: any bytes but NUL and "/", 1 to 255 of them.
file_names = st.binary(min_size=1, max_size=255).filter(lambda name: b"\0" not in name and b"/" not in name)


@given(
    st.lists(
        st.tuples(
            st.integers(-1, 2**31 - 1), st.sampled_from([IN_CREATE, IN_MOVED_TO, IN_CLOSE_WRITE]), file_names
        ),
        max_size=20,
    )
)
@settings(max_examples=200, deadline=None)
def test_every_event_of_a_read_is_parsed_with_its_name(events: list[tuple[int, int, bytes]]) -> None:
    data = b"".join(pack_event(watch, mask, name) for watch, mask, name in events)
    parsed = list(parse_events(data))
    assert [(event.watch, event.mask, os.fsencode(event.name)) for event in parsed] == events


def test_a_full_event_queue_is_read_as_an_overflow_and_asks_for_a_rescan(tmp_path: Path) -> None:
    # The kernel queues at most fs.inotify.max_queued_events (16,384 by default) and then one
    # overflow event: made for real here by writing files faster than anyone reads.
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    inotify = Inotify()
    try:
        inotify.watch(tmp_path)
        for index in range(limit // 2 + 1):  # a creation and a close each
            (tmp_path / f"{index}.bmp").write_bytes(b"")
        events: list[Event] = []
        while read := inotify.read():
            events += read
    finally:
        inotify.close()
    assert events[-1].overflowed and len(events) == limit + 1

    inbox_events = InboxEvents(tmp_path, threading.Event())
    inbox_events._inotify = Inotify()  # driven by hand: take_events is the reader thread's
    try:
        inbox_events.take_events(list(parse_events(pack_event(-1, IN_Q_OVERFLOW))))
        assert inbox_events.take().rescan is True
    finally:
        inbox_events.stop()


def test_a_folder_made_while_the_event_queue_was_full_is_watched(tmp_path: Path) -> None:
    (tmp_path / "cam").mkdir()
    events = InboxEvents(tmp_path, threading.Event())
    events._inotify = Inotify()  # driven by hand: take_events is the reader thread's
    try:
        events._watch_tree()
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        for index in range(limit // 2 + 1):  # a creation and a close each: the queue fills
            (tmp_path / "cam" / f"{index}.bmp").write_bytes(b"")
        (tmp_path / "cam2").mkdir()  # its event dropped
        read: list[Event] = []
        while batch := events._inotify.read():
            read += batch
        assert read[-1].overflowed and not any(event.name == "cam2" for event in read)
        events.take_events(read)
        assert events.take().rescan
        write_bmp(tmp_path / "cam2" / "heard.bmp")
        events.take_events(events._inotify.read())
        assert PurePosixPath("cam2/heard.bmp") in events.take().finished
    finally:
        events.stop()


def test_folders_made_moved_in_and_out_are_watched_as_they_now_lie(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "cam-01").mkdir(parents=True)
    (outside / "cam-02").mkdir(parents=True)
    write_bmp(outside / "cam-02" / "waiting.bmp")
    seen: list[EventBatch] = []
    events = InboxEvents(inbox, threading.Event())
    events.start()

    def seen_in(field: str, relative: str) -> bool:
        seen.append(events.take())
        return any(PurePosixPath(relative) in getattr(batch, field) for batch in seen)

    def rescan_asked() -> bool:
        seen.append(events.take())
        return seen[-1].rescan

    try:
        (inbox / "cam-01" / "2026" / "11").mkdir(parents=True)  # nested, made after the start
        wait_for(rescan_asked, timeout=30, what="a rescan for the new folder")
        # mkdir -p makes 11 after 2026: the walk that 2026's event started may have looked inside
        # it before 11 was there, and then 11's own event brings the walk that watches it. Until
        # then a frame written there is found by the rescan, not by an event (a clean-clone CI run
        # wrote it first, once in many).
        nested = PurePosixPath("cam-01/2026/11")
        wait_for(lambda: nested in events._folders.values(), timeout=30, what="the nested folder watched")
        write_bmp(inbox / "cam-01" / "2026" / "11" / "deep.bmp")
        wait_for(lambda: seen_in("finished", "cam-01/2026/11/deep.bmp"), timeout=30, what="the nested frame")

        (outside / "cam-02").rename(inbox / "cam-02")  # arrives full: a scan finds waiting.bmp
        wait_for(rescan_asked, timeout=30, what="a rescan for the folder moved in")
        write_bmp(inbox / "cam-02" / "next.bmp")
        wait_for(
            lambda: seen_in("hints", "cam-02/next.bmp"), timeout=30, what="a frame in the moved-in folder"
        )

        (inbox / "cam-01").rename(inbox / "cam-03")  # moved inside: its watches follow its name
        wait_for(rescan_asked, timeout=30, what="a rescan for the renamed folder")
        write_bmp(inbox / "cam-03" / "2026" / "11" / "renamed.bmp")
        wait_for(lambda: seen_in("hints", "cam-03/2026/11/renamed.bmp"), timeout=30, what="the new name")

        (inbox / "cam-02").rename(outside / "cam-02")  # moved out: it says nothing any more
        wait_for(rescan_asked, timeout=30, what="a rescan for the folder moved out")
        write_bmp(inbox / "first-marker.bmp")  # every event before it is in once its close is
        wait_for(lambda: seen_in("finished", "first-marker.bmp"), timeout=30, what="the first marker")
        seen.clear()
        (inbox / ".in-progress" / "x").mkdir(parents=True)  # hidden: neither watched nor rescanned
        write_bmp(outside / "cam-02" / "gone.bmp")
        write_bmp(inbox / ".in-progress" / "x" / "claimed.bmp")
        write_bmp(inbox / "marker.bmp")
        wait_for(lambda: seen_in("finished", "marker.bmp"), timeout=30, what="the marker")
        assert set().union(*(batch.hints for batch in seen)) == {PurePosixPath("marker.bmp")}
        assert not any(batch.rescan for batch in seen)
        assert {inbox / folder for folder in events._folders.values()} == {
            inbox,
            inbox / "cam-03",
            inbox / "cam-03" / "2026",
            inbox / "cam-03" / "2026" / "11",
        }
    finally:
        events.stop()


def test_a_frame_in_a_folder_renamed_within_the_same_read_is_hinted_by_its_new_name(tmp_path: Path) -> None:
    # The reader is driven by hand here (its thread not started) so that the rename and the
    # frame land in one read, as they do when a site renames a folder while frames arrive.
    inbox = tmp_path / "inbox"
    (inbox / "cam-01" / "sub").mkdir(parents=True)
    events = InboxEvents(inbox, threading.Event())
    events._inotify = Inotify()
    try:
        events._watch_tree()
        (inbox / "cam-01").rename(inbox / "cam-02")
        write_bmp(inbox / "cam-02" / "sub" / "x.bmp")
        events.take_events(events._inotify.read())
        taken = events.take()
    finally:
        events.stop()
    assert taken.hints == taken.finished == {PurePosixPath("cam-02/sub/x.bmp")} == set(scan_inbox(inbox))
    assert taken.rescan


def refuse_watches(
    monkeypatch: pytest.MonkeyPatch, refused_here: Callable[[Path], bool], *, times: int | None = None
) -> threading.Event:
    """The watches of folders `refused_here` says refused `times` times (None: until the event
    returned is set), as when fs.inotify.max_user_watches is used up by other programs: a
    machine-wide setting that a test must not lower."""
    watch, tries, allowed = Inotify.watch, [], threading.Event()

    def refused(self: Inotify, path: Path) -> int:
        if refused_here(path) and not allowed.is_set():
            tries.append(path)
            if times is None or len(tries) <= times:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return watch(self, path)

    monkeypatch.setattr(Inotify, "watch", refused)
    return allowed


def watches_tried(monkeypatch: pytest.MonkeyPatch, refusal: Callable[[Path], int | None]) -> list[Path]:
    """Every folder a watch is asked for, in order, each refused with the errno `refusal` gives
    it (None: watched)."""
    watch, tried = Inotify.watch, []

    def spied(self: Inotify, path: Path) -> int:
        tried.append(path)
        number = refusal(path)
        if number is not None:
            raise OSError(number, os.strerror(number), str(path))
        return watch(self, path)

    monkeypatch.setattr(Inotify, "watch", spied)
    return tried


@pytest.mark.parametrize(
    "change",
    ["deleted and made again", "renamed away and back", "missing at start", "out of watches at start"],
)
def test_an_inbox_that_is_another_folder_now_is_watched_again_at_the_next_rescan(
    tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "inbox"
    if change != "missing at start":
        (inbox / "cam").mkdir(parents=True)
    if change == "out of watches at start":
        refuse_watches(
            monkeypatch, lambda path: path == inbox, times=1
        )  # check_inbox tries the same folder again
    events = InboxEvents(inbox, threading.Event())
    events.start()
    try:
        if change == "deleted and made again":
            shutil.rmtree(inbox)
            inbox.mkdir()
        elif change == "renamed away and back":
            inbox.rename(tmp_path / "away")
            (tmp_path / "away").rename(inbox)
        elif change == "missing at start":
            inbox.mkdir()
        events.check_inbox()  # as the daemon's loop does at each rescan
        written: set[PurePosixPath] = set()
        finished: set[PurePosixPath] = set()

        def a_new_frame_is_heard() -> bool:  # written until one is: the watch comes back meanwhile
            name = f"top-{len(written)}.bmp"
            written.add(PurePosixPath(name))
            write_bmp(inbox / name)
            finished.update(events.take().finished)
            return bool(finished & written)

        wait_for(a_new_frame_is_heard, timeout=30, what="events from the inbox again")
    finally:
        events.stop()


def test_a_watch_still_refused_is_tried_at_each_rescan_without_asking_for_another_or_warning_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A rescan after each try would make the daemon's loop rescan without pause (each rescan
    # asks check_inbox, whose try would ask for a rescan): measured 8,402 rescans in 3 s.
    camera = tmp_path / "inbox" / "cam"
    camera.mkdir(parents=True)
    allowed = refuse_watches(monkeypatch, lambda path: path == camera)
    events = InboxEvents(camera.parent, threading.Event())
    caplog.set_level(logging.DEBUG, logger="watcher.intake.events")

    def refusals() -> list[logging.LogRecord]:
        return [record for record in caplog.records if record.getMessage().startswith("cannot watch")]

    events.start()
    try:
        for rescan in range(1, 5):
            events.check_inbox()  # as the daemon's loop does at each rescan
            # The reader takes one ask at a time: the earlier tries' answers are all in by now.
            wait_for(lambda tries=rescan: len(refusals()) > tries, what="the refused watch to be tried again")
        assert not events.take().rescan
        assert [record.levelno for record in refusals()] == [logging.WARNING] + [logging.DEBUG] * 4
        assert (
            f"{camera} (out of inotify watches: raise fs.inotify.max_user_watches)"
            in refusals()[0].getMessage()
        )
        # Watched at last: one rescan for frames that came there unheard since the last.
        allowed.set()
        events.check_inbox()
        wait_for(lambda: events.take().rescan, what="a rescan once the folder is watched")
        assert "every folder of the inbox is watched for events again" in caplog.messages
        write_bmp(camera / "heard.bmp")
        wait_for(lambda: PurePosixPath("cam/heard.bmp") in events.take().finished, what="the folder's events")
    finally:
        events.stop()


def test_a_rescan_tries_only_the_folders_left_unwatched_and_what_is_under_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An inbox on a filesystem of its own has a `lost+found` the daemon's user may not enter:
    # trying it again must not cost a walk of the whole tree (every camera's folders) at every
    # rescan. A folder out of watches is tried again with what is under it.
    for folder in ("lost+found", "cam-1/2026-11-29", "cam-2/2026-11-29"):
        (tmp_path / folder).mkdir(parents=True)
    allowed = threading.Event()

    def refusal(path: Path) -> int | None:
        if path.name == "lost+found":  # root may watch any: refused here
            return errno.EACCES
        return errno.ENOSPC if path.name == "cam-2" and not allowed.is_set() else None

    tried = watches_tried(monkeypatch, refusal)

    def relative_tried() -> list[str]:
        return sorted(path.relative_to(tmp_path).as_posix() for path in tried)

    events = InboxEvents(tmp_path, threading.Event())
    events._inotify = Inotify()  # driven by hand: the walks are the reader thread's
    try:
        events._watch_tree()
        assert relative_tried() == [".", "cam-1", "cam-1/2026-11-29", "cam-2", "lost+found"]
        tried.clear()
        events._rewatch()  # check_inbox's, at a rescan
        assert relative_tried() == ["cam-2", "lost+found"]
        assert not events.take().rescan, "nothing newly watched"
        tried.clear()
        allowed.set()
        events._rewatch()
        assert relative_tried() == ["cam-2", "cam-2/2026-11-29", "lost+found"]
        assert events.take().rescan, "frames may have come to cam-2 unheard"
        tried.clear()
        events._rewatch()
        assert relative_tried() == ["lost+found"]
        write_bmp(tmp_path / "cam-2" / "2026-11-29" / "heard.bmp")
        heard = PurePosixPath("cam-2/2026-11-29/heard.bmp")
        events.take_events(events._inotify.read())
        assert heard in events.take().finished
    finally:
        events.stop()


def test_a_refused_folder_renamed_before_the_retry_is_not_taken_for_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The rescan's retry can come before the reader has read a rename's event: tried by its old
    # name, the refused folder was gone, and every folder taken for watched (an INFO line, then
    # the warning again once the event was read).
    for name in ("cam-1", "cam-2"):
        (tmp_path / name).mkdir()
    refuse_watches(monkeypatch, lambda path: path.name in ("cam-2", "cam-3") and path.exists())
    events = InboxEvents(tmp_path, threading.Event())
    events._inotify = Inotify()  # driven by hand: the walks are the reader thread's
    caplog.set_level(logging.DEBUG, logger="watcher.intake.events")
    try:
        events._watch_tree()
        (tmp_path / "cam-2").rename(tmp_path / "cam-3")
        events._rewatch()
        events.take_events(events._inotify.read())
    finally:
        events.stop()
    said = [record for record in caplog.records if record.getMessage().startswith(("cannot watch", "every"))]
    assert [record.levelno for record in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "cam-3 (out of inotify watches" in said[-1].getMessage()


def test_a_retry_never_follows_a_link_put_where_a_folder_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A camera folder moved away and a link to elsewhere put in its place, its event unread yet:
    # its refused subfolder tried again by the old path went through the link, out of the inbox.
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "cam-1" / "day").mkdir(parents=True)
    (outside / "day" / "deep").mkdir(parents=True)
    tried = watches_tried(monkeypatch, lambda path: errno.ENOSPC if path.name == "day" else None)
    events = InboxEvents(inbox, threading.Event())
    events._inotify = Inotify()  # driven by hand: the walks are the reader thread's
    try:
        events._watch_tree()
        (inbox / "cam-1").rename(tmp_path / "away")
        (inbox / "cam-1").symlink_to(outside)
        tried.clear()
        events._rewatch()
    finally:
        events.stop()
    assert tried, "the retry ran"
    assert all(path.resolve().is_relative_to(inbox.resolve()) for path in tried), tried


def test_folders_refused_one_after_another_are_warned_about_once_until_all_are_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Out of watches, a camera making a folder an hour (and retention removing old ones) changes
    # which folders are refused at every walk: news once, not every hour.
    allowed = refuse_watches(monkeypatch, lambda path: path.name.startswith("hour-"))
    events = InboxEvents(tmp_path, threading.Event())
    events._inotify = Inotify()  # driven by hand: the walks are the reader thread's
    caplog.set_level(logging.DEBUG, logger="watcher.intake.events")
    try:
        for hour in range(4):
            (tmp_path / f"hour-{hour}").mkdir()
            if hour >= 2:
                (tmp_path / f"hour-{hour - 2}").rmdir()
            events._watch_tree()
        allowed.set()
        events._watch_tree()
        (tmp_path / "hour-9").mkdir()
        allowed.clear()
        events._watch_tree()  # refused again after all were watched: news again
    finally:
        events.stop()
    said = [(record.levelno, record.getMessage()) for record in caplog.records]
    levels = [level for level, message in said if message.startswith(("cannot watch", "every folder"))]
    assert levels == [logging.WARNING] + [logging.DEBUG] * 3 + [logging.INFO, logging.WARNING]


@pytest.mark.parametrize("odd", ["removed during the walk", "never watchable"])
def test_running_out_of_watches_is_news_after_another_folder_went_unwatched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, odd: str
) -> None:
    # Retention removing an old hour folder between its parent's listing and its watch (nothing
    # left to watch: not unwatched at all), or a `lost+found` the daemon's user may not enter
    # (unwatched for good): with one warning for any reason, the real news after it, out of
    # watches, was said only at DEBUG.
    for name in ("odd", "cam"):
        (tmp_path / name).mkdir()
    watch = Inotify.watch

    def odd_one(self: Inotify, path: Path) -> int:
        if path.name == "odd" and odd == "never watchable":  # root may watch any: refused here
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        if path.name == "odd" and path.exists():
            path.rmdir()  # the kernel itself then answers ENOENT
        return watch(self, path)

    monkeypatch.setattr(Inotify, "watch", odd_one)
    events = InboxEvents(tmp_path, threading.Event())
    events._inotify = Inotify()  # driven by hand: the walks are the reader thread's
    caplog.set_level(logging.DEBUG, logger="watcher.intake.events")
    try:
        for _ in range(2):
            events._watch_tree()
        allowed = refuse_watches(monkeypatch, lambda path: path.name == "cam")
        for _ in range(2):
            events._watch_tree()
        allowed.set()  # the machine's watches hovering at the limit: cam's watch comes and goes
        events._watch_tree()
        allowed.clear()
        events._watch_tree()
    finally:
        events.stop()
    refusals = [
        record.getMessage() for record in caplog.records if record.getMessage().startswith("cannot watch")
    ]
    levels = [record.levelno for record in caplog.records if record.getMessage().startswith("cannot watch")]
    if odd == "removed during the walk":
        # Every folder watched between: running out again is news again.
        assert levels == [logging.WARNING, logging.DEBUG, logging.WARNING] and "odd" not in refusals[0]
        out_of_watches = refusals[0]
    else:
        # lost+found never watched: running out of watches is said once, not at each return.
        assert levels == [logging.WARNING, logging.DEBUG, logging.WARNING] + [logging.DEBUG] * 3
        assert "odd (Permission denied)" in refusals[0]
        assert refusals[2].index("cam") < refusals[2].index("odd"), "the news first"
        out_of_watches = refusals[2]
    assert "cam (out of inotify watches: raise fs.inotify.max_user_watches)" in out_of_watches


def test_an_inbox_that_is_a_file_now_is_said_to_be_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    inbox.write_bytes(b"not a folder")
    events = InboxEvents(inbox, threading.Event())
    events._inotify = Inotify()
    try:
        events._watch_tree()
    finally:
        events.stop()
    assert f"{inbox} (Not a directory)" in caplog.text


def test_start_twice_is_refused_and_stop_leaves_nothing_open(tmp_path: Path) -> None:
    descriptors = len(os.listdir("/proc/self/fd"))
    events = InboxEvents(tmp_path, threading.Event())
    events.start()
    with pytest.raises(RuntimeError, match="read already"):
        events.start()
    events.stop()
    events.stop()
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert not [thread for thread in threading.enumerate() if thread.name == "inbox-events"]
