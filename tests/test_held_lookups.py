"""watcher.intake.held_lookups: os.path.lexists's answer, with the GIL kept through the look."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.intake import held_lookups
from watcher.intake.held_lookups import LookupsByFolder, lexists_for
from watcher.intake.moving import reserve_destination

# Name parts: plain ones, odd bytes a camera could write (as os.fsdecode gives them), the ones
# that exist in the tree below, '.', '..', an empty one (a doubled slash) and a NUL.
_PARTS = st.one_of(
    st.sampled_from(["file", "folder", "dangling", "loop", "link-to-folder", ".", "..", "", "\0"]),
    st.binary(min_size=1, max_size=300).map(lambda raw: os.fsdecode(raw.replace(b"/", b"_"))),
    st.text(min_size=1, max_size=20).filter(lambda text: "/" not in text),
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file, a folder holding a file, a dangling link, a link loop and a link to the folder."""
    root = tmp_path_factory.mktemp("looks")
    (root / "file").write_bytes(b"x")
    (root / "folder").mkdir()
    (root / "folder" / "file").write_bytes(b"y")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "loop").symlink_to(root / "loop")
    (root / "link-to-folder").symlink_to(root / "folder")
    return root


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_PARTS, min_size=1, max_size=4))
def test_every_name_gets_os_path_lexists_answer(
    tree: Path, parts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(held_lookups, "_released_until", 0.0)  # every look the held one
    monkeypatch.setattr(held_lookups, "SLOW_LOOKUP_S", float("inf"))
    path = str(tree) + "/" + "/".join(parts)
    assert held_lookups.lexists(path) == os.path.lexists(path)


def test_names_that_exist_in_some_way_are_found_and_others_not(tree: Path) -> None:
    assert held_lookups.lexists(str(tree / "file"))
    assert held_lookups.lexists(str(tree / "dangling"))  # the name exists: it must not be reused
    assert held_lookups.lexists(str(tree / "link-to-folder" / "file"))
    assert not held_lookups.lexists(str(tree / "missing"))
    assert not held_lookups.lexists(str(tree / "file" / "under-a-file"))
    assert not held_lookups.lexists(str(tree / ("n" * 300)))
    assert not held_lookups.lexists(str(tree / "file") + "\0tail")


class _Spinner:
    """One thread running Python that never waits, counting its turns, at a long switch interval:
    while the test's thread holds the GIL it cannot run, unless that thread gives the GIL back."""

    def __init__(self, switch_interval_s: float) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._before = sys.getswitchinterval()
        sys.setswitchinterval(switch_interval_s)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.count += 1

    def ran_during(self, look: Callable[[], object]) -> bool:
        before = self.count
        look()
        return self.count != before

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._before)


@contextmanager
def _spinning(switch_interval_s: float) -> Iterator[_Spinner]:
    spinner = _Spinner(switch_interval_s)
    try:
        yield spinner
    finally:
        spinner.close()


def test_the_look_is_made_through_a_function_that_keeps_the_gil() -> None:
    # ctypes' PyDLL functions keep the GIL through the call (CDLL's give it back): the flag says so.
    assert held_lookups._faccessat is not None
    assert held_lookups._faccessat._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]


def test_the_look_keeps_the_gil_beside_busy_python(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(held_lookups, "_released_until", 0.0)  # not after another test's slow look
    monkeypatch.setattr(held_lookups, "SLOW_LOOKUP_S", float("inf"))  # nor a look the OS delayed
    # A look that gave the GIL back would let the busy thread take it (and this one would then
    # wait up to a switch interval to get it again, the daemon's cost); one that keeps it lets
    # nothing run. At a 0.5 s switch interval the busy thread runs otherwise only when forced:
    # at most once in a few milliseconds of looks. os.path.lexists shows the test tells them apart.
    paths = [str(tree / "file"), str(tree / "missing")] * 500
    with _spinning(0.5) as spinner:
        turns_beside_held = sum(spinner.ran_during(lambda p=path: held_lookups.lexists(p)) for path in paths)
        released_gave_a_turn = any(
            spinner.ran_during(lambda p=path: os.path.lexists(p)) for path in paths * 5
        )
    assert turns_beside_held <= 1
    assert released_gave_a_turn


def test_a_slow_look_sends_looks_back_to_giving_the_gil_back_for_a_while(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(held_lookups, "_released_until", 0.0)
    monkeypatch.setattr(held_lookups, "SLOW_LOOKUP_S", 0.0)  # every look counts as slow
    released: list[str] = []
    lexists = os.path.lexists

    def spied(path: str) -> bool:
        released.append(path)
        return lexists(path)

    monkeypatch.setattr(os.path, "lexists", spied)
    with caplog.at_level(logging.DEBUG, logger=held_lookups.__name__):
        assert held_lookups.lexists(str(tree / "file"))  # held, and found slow
        assert held_lookups.lexists(str(tree / "dangling"))
        assert not held_lookups.lexists(str(tree / "missing"))

    assert released == [str(tree / "dangling"), str(tree / "missing")]
    assert [record.message for record in caplog.records if "GIL back" in record.message] != []
    monkeypatch.setattr(held_lookups, "_released_until", time.monotonic() - 1)  # the while is over
    assert held_lookups.lexists(str(tree / "file"))
    assert len(released) == 2  # held again


def test_a_failure_other_than_absent_is_asked_of_os_path_lexists(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A seccomp filter that refuses faccessat2 with EPERM (an older systemd's SystemCallFilter), or
    # a C library that refuses the flags with EINVAL: the usual look answers, not "absent".
    for refused in (errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENOSYS):
        monkeypatch.setattr(held_lookups, "_released_until", 0.0)
        calls: list[bytes] = []

        def refusing(
            directory: int,
            path: bytes,
            mode: int,
            flags: int,
            code: int = refused,
            calls: list[bytes] = calls,
        ) -> int:
            calls.append(path)
            ctypes.set_errno(code)
            return -1

        monkeypatch.setattr(held_lookups, "_faccessat", refusing)
        assert held_lookups.lexists(str(tree / "file")), errno.errorcode[refused]
        assert not held_lookups.lexists(str(tree / "missing")), errno.errorcode[refused]
        # A permission is the name's own case; the call refused outright is not tried again.
        assert len(calls) == (2 if refused == errno.EACCES else 1), errno.errorcode[refused]


def test_only_local_filesystems_get_the_look_that_keeps_the_gil(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for local in ("ext4", "xfs", "tmpfs", "overlay"):
        monkeypatch.setattr(held_lookups, "filesystem_type", lambda folder, kind=local: kind)
        assert lexists_for(tree) is held_lookups.lexists, local
    # A network share, FUSE or anything not known to be local can make a look wait on the network
    # or a process: never with the GIL held.
    for fstype in ("nfs4", "cifs", "fuse.sshfs", "fuseblk", "beegfs", None):
        monkeypatch.setattr(held_lookups, "filesystem_type", lambda folder, kind=fstype: kind)
        assert lexists_for(tree) is os.path.lexists, fstype


def test_the_look_is_chosen_again_when_a_filesystem_is_mounted_over_the_folder(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups, asked = LookupsByFolder(), []
    device = os.stat(tree).st_dev
    kinds = iter(["ext4", "ext4", "nfs4"])

    def filesystem_type(folder: Path) -> str:
        asked.append(folder)
        return next(kinds)

    monkeypatch.setattr(held_lookups, "filesystem_type", filesystem_type)
    assert lookups.under(tree, device) is held_lookups.lexists
    assert lookups.under(tree, device) is held_lookups.lexists and len(asked) == 1  # kept while the same
    assert lookups.under(tree, device + 1) is held_lookups.lexists and len(asked) == 2  # a share mounted
    assert lookups.under(tree, device + 2) is os.path.lexists


def test_reserving_skips_names_taken_on_disk_by_any_kind_of_entry(tree: Path) -> None:
    # A dangling link or a folder in the way takes the name as a file does: the frame gets `-1`.
    for exists in (held_lookups.lexists, os.path.lexists):
        for name in ("file", "dangling", "folder"):
            assert reserve_destination(str(tree / name), taken=set(), exists=exists) == str(
                tree / f"{name}-1"
            )
        assert reserve_destination(str(tree / "free.bmp"), taken=set(), exists=exists) == str(
            tree / "free.bmp"
        )
