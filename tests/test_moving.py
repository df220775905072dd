from __future__ import annotations

from pathlib import Path

import pytest

from watcher.intake.moving import move_no_clobber, reserve_destination


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
