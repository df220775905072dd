from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import pytest

from model.synthetic import bmp_bytes, write_bmp
from watcher.intake.claiming import claim
from watcher.intake.moving import move_no_clobber, reserve_destination
from watcher.intake.placement import move_frame, place


def test_clashing_names_get_a_numbered_suffix_and_nothing_is_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "processed"
    (root / "cam").mkdir(parents=True)
    (root / "cam" / "x.bmp").write_bytes(b"old")
    taken: set[str] = set()

    first = Path(reserve_destination(str(root / "cam" / "x.bmp"), taken=taken))
    second = Path(reserve_destination(str(root / "cam" / "x.bmp"), taken=taken))

    assert first == root / "cam" / "x-1.bmp"
    assert second == root / "cam" / "x-2.bmp"
    source = tmp_path / "new.bmp"
    source.write_bytes(b"new")
    assert move_no_clobber(source, first) == first
    assert (root / "cam" / "x.bmp").read_bytes() == b"old"
    assert first.read_bytes() == b"new" and not source.exists()


def test_move_takes_the_next_name_when_the_reserved_one_was_taken(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "x.bmp"
    destination.parent.mkdir()
    destination.write_bytes(b"someone else")
    source = tmp_path / "x.bmp"
    source.write_bytes(b"ours")

    final = move_no_clobber(source, destination)

    assert final == tmp_path / "out" / "x-1.bmp"
    assert destination.read_bytes() == b"someone else" and final.read_bytes() == b"ours"


def test_a_symlink_is_moved_as_a_link_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("do not touch")
    link = tmp_path / "x.bmp"
    link.symlink_to(target)

    final = move_no_clobber(link, tmp_path / "failed" / "x.bmp")

    assert final.is_symlink() and not link.exists()
    assert target.read_text() == "do not touch"


def test_a_move_interrupted_between_link_and_unlink_is_finished_not_copied(tmp_path: Path) -> None:
    source = tmp_path / "x.bmp"
    source.write_bytes(b"frame")
    destination = tmp_path / "out" / "x.bmp"
    destination.parent.mkdir()
    destination.hardlink_to(source)  # where a killed move stopped

    assert move_no_clobber(source, destination) == destination

    assert not source.exists() and destination.read_bytes() == b"frame"
    assert sorted(path.name for path in destination.parent.iterdir()) == ["x.bmp"]


def test_a_numbered_name_keeps_the_folder_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `./x-1.bmp` and `x-1.bmp` are one file: a numbered name written the second way would not
    # count as taken when a frame really named `x-1.bmp` asks for `./x-1.bmp`.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.bmp").write_bytes(b"old")
    taken: set[str] = set()

    numbered = reserve_destination("./x.bmp", taken=taken)
    own_name = reserve_destination("./x-1.bmp", taken=taken)

    assert numbered == "./x-1.bmp" and own_name == "./x-1-1.bmp"


def test_another_instances_frame_of_the_same_bytes_under_the_reserved_name_is_kept(tmp_path: Path) -> None:
    # Two instances of one inbox each take a `cam/x.bmp` of the same bytes (a camera that uploads
    # a frame twice), and each reserves `processed/cam/x.bmp` before either has moved: the second
    # move finds the first frame there. Same bytes on the same filesystem is not its own copy.
    inbox, processed = tmp_path / "inbox", tmp_path / "processed"
    data = bmp_bytes(width=8, height=8)
    frames = []
    for instance in ("host-1", "host-2"):
        write_bmp(inbox / "cam" / "x.bmp", width=8, height=8)
        frame = claim(inbox, inbox / ".in-progress" / instance, PurePosixPath("cam/x.bmp"))
        assert frame is not None
        frames.append(frame)
    sha256 = hashlib.sha256(data).hexdigest()
    reserved = [Path(place(processed, frame, taken=set())) for frame in frames]
    assert reserved[0] == reserved[1] == processed / "cam" / "x.bmp"

    finals = [
        move_frame(frame, stored, root=processed, sha256=sha256)
        for frame, stored in zip(frames, reserved, strict=True)
    ]

    assert finals == [processed / "cam" / "x.bmp", processed / "cam" / "x-1.bmp"]
    assert all(final.read_bytes() == data for final in finals)
