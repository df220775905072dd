"""A claim never follows a link below the inbox: a camera folder swapped for a link (or a file)
between the scan and the claim leaves the frame unclaimed, and the file the link leads to, outside
the inbox, untouched. Real folders, links and files in tmp_path; the claims as the daemon makes
them (claim, and claim_share as a file worker runs it)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.synthetic import write_bmp
from watcher.intake.claiming import claim
from watcher.intake.readiness import ReadinessTracker, Verdict
from watcher.intake.source_folders import KEPT_OPEN, FolderReplaced, SourceFolders
from watcher.pipeline.claims import Claims
from watcher.pipeline.file_work import claim_outcome, claim_share
from watcher.pipeline.stages import Claimed


def layout(root: Path) -> tuple[Path, Path, Path]:
    inbox, area, outside = root / "inbox", root / "inbox" / ".in-progress" / "one", root / "outside"
    for folder in (inbox, area, outside):
        folder.mkdir(parents=True, exist_ok=True)
    return inbox, area, outside


def frame(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bmp(path, width=8, height=8, seed=1)
    return path


def swapped_for_a_link(folder: Path, target: Path) -> None:
    """`folder` moved away (still in the inbox's filesystem) and a link to `target` in its place,
    as a hostile writer could do between the daemon's scan and its claim."""
    folder.rename(folder.with_name(".away-" + folder.name))
    folder.symlink_to(target, target_is_directory=True)


def test_a_camera_folder_swapped_for_a_link_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox, area, outside = layout(tmp_path)
    frame(inbox / "cam-07" / "x.bmp")
    victim = frame(outside / "x.bmp")
    swapped_for_a_link(inbox / "cam-07", outside)
    with caplog.at_level(logging.WARNING):
        assert claim(inbox, area, PurePosixPath("cam-07/x.bmp")) is None
    assert victim.exists() and os.listdir(area) == []
    assert "cam-07 in the inbox is not a folder any more" in caplog.text


def test_a_deeper_level_swapped_for_a_link_or_a_file_is_not_followed(tmp_path: Path) -> None:
    inbox, area, outside = layout(tmp_path)
    frame(inbox / "site" / "cam" / "x.bmp")
    frame(inbox / "other" / "cam" / "y.bmp")
    victim = frame(outside / "cam" / "x.bmp")
    swapped_for_a_link(inbox / "site", outside)
    assert claim(inbox, area, PurePosixPath("site/cam/x.bmp")) is None
    (inbox / "other" / "cam").rename(inbox / ".away")
    (inbox / "other" / "cam").write_bytes(b"a file where the folder was")
    assert claim(inbox, area, PurePosixPath("other/cam/y.bmp")) is None
    assert victim.exists() and os.listdir(area) == []


def test_a_share_claims_from_real_folders_and_leaves_a_swapped_ones_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox, area, outside = layout(tmp_path)
    names = [f"cam-{camera}/{index}.bmp" for camera in (1, 2) for index in range(3)] + ["top.bmp"]
    for name in names:
        frame(inbox / name)
    victims = [frame(outside / f"{index}.bmp") for index in range(3)]
    swapped_for_a_link(inbox / "cam-2", outside)
    with caplog.at_level(logging.WARNING):
        answers = claim_share(inbox, area, [(name, None) for name in names], settle_s=0.0, timeout_s=60.0)
    outcomes = {
        name: claim_outcome(PurePosixPath(name), answer) for name, answer in zip(names, answers, strict=True)
    }
    claimed = {name for name, outcome in outcomes.items() if outcome.frame is not None}
    assert claimed == {"cam-1/0.bmp", "cam-1/1.bmp", "cam-1/2.bmp", "top.bmp"}
    assert all(outcomes[f"cam-2/{index}.bmp"].verdict == Verdict.GONE for index in range(3))
    assert all(victim.exists() for victim in victims) and len(os.listdir(area)) == 4
    assert caplog.text.count("not a folder any more") == 1  # once a share, not once a frame


def test_a_folder_swapped_after_it_was_opened_is_not_followed_either(tmp_path: Path) -> None:
    # Within one file process's share (milliseconds): the claims go on in the folder opened.
    inbox, area, outside = layout(tmp_path)
    first, second = frame(inbox / "cam" / "a.bmp"), frame(inbox / "cam" / "b.bmp")
    victim = frame(outside / "b.bmp")
    with SourceFolders(inbox) as folders:
        assert claim(inbox, area, PurePosixPath("cam/a.bmp"), folders=folders) is not None
        swapped_for_a_link(inbox / "cam", outside)
        # The folder that was opened: the frame that was scanned there, not the link's.
        taken = claim(inbox, area, PurePosixPath("cam/b.bmp"), folders=folders)
    assert taken is not None and victim.exists() and not first.exists()
    assert not (inbox / ".away-cam" / second.name).exists()


def test_a_share_over_more_folders_than_are_kept_open_claims_them_all_and_leaks_none(tmp_path: Path) -> None:
    inbox, area, _ = layout(tmp_path)
    names = [f"cam-{index}/x.bmp" for index in range(KEPT_OPEN + 5)]
    for name in names:
        frame(inbox / name)
    descriptors = len(os.listdir("/proc/self/fd"))
    answers = claim_share(inbox, area, [(name, None) for name in names], settle_s=0.0, timeout_s=60.0)
    assert all(answer[0] is not None for answer in answers) and len(os.listdir(area)) == len(names)
    assert len(os.listdir("/proc/self/fd")) == descriptors


def test_a_folder_gone_is_a_frame_gone(tmp_path: Path) -> None:
    inbox, area, _ = layout(tmp_path)
    with SourceFolders(inbox) as folders, pytest.raises(FileNotFoundError) as raised:
        folders.source(PurePosixPath("no-such-camera/x.bmp"))
    assert not isinstance(raised.value, FolderReplaced)
    assert claim(inbox, area, PurePosixPath("no-such-camera/x.bmp")) is None


# Folder names as a hostile inbox can hold them: any bytes but '/' and NUL, not hidden.
_folder_names = (
    st.binary(min_size=1, max_size=30)
    .filter(lambda raw: b"/" not in raw and b"\0" not in raw and raw not in (b".", b".."))
    .map(os.fsdecode)
    .filter(lambda name: not name.startswith("."))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folders=st.lists(_folder_names, min_size=1, max_size=4, unique=True), swapped=st.integers(0, 3))
def test_any_level_swapped_for_a_link_leaves_everything_where_it_was(
    tmp_path_factory: pytest.TempPathFactory, folders: list[str], swapped: int
) -> None:
    inbox, area, outside = layout(tmp_path_factory.mktemp("swap"))
    relative = PurePosixPath(*folders, "x.bmp")
    frame(inbox / relative)
    level = swapped % len(folders)
    # What the link leads to holds the rest of the frame's path: followed, it would be claimed.
    victim = frame(outside.joinpath(*folders[level + 1 :], "x.bmp"))
    swapped_for_a_link(inbox.joinpath(*folders[: level + 1]), outside)
    assert claim(inbox, area, relative) is None
    assert victim.exists() and os.listdir(area) == []
    # The real folders, put back: the same frame is claimed from them.
    (inbox.joinpath(*folders[: level + 1])).unlink()
    (inbox.joinpath(*folders[:level], ".away-" + folders[level])).rename(
        inbox.joinpath(*folders[: level + 1])
    )
    taken = claim(inbox, area, relative)
    assert taken is not None and not (inbox / relative).exists() and taken.work_path.exists()


def test_a_folder_moved_away_and_made_again_during_a_turn_is_claimed_from_anew(tmp_path: Path) -> None:
    # On threads a turn's `take` can wait minutes for a batch: a folder rotated away meanwhile
    # (a retention job) and made again by the camera must be the one claimed from next.
    inbox, area, outside = layout(tmp_path)
    frame(inbox / "cam" / "a.bmp")
    frame(inbox / "cam" / "b.bmp")
    claims = Claims(
        inbox=inbox,
        area=area,
        readiness=ReadinessTracker(settle_s=0.0, timeout_s=60.0),
        stop=threading.Event(),
    )
    claims.hint([PurePosixPath("cam/a.bmp"), PurePosixPath("cam/b.bmp"), PurePosixPath("cam/c.bmp")])
    taken: list[Claimed] = []

    def take(claimed: Claimed) -> None:
        if not taken:  # after the first claim: the folder rotated out, a new one with a new frame
            (inbox / "cam").rename(outside / "cam")
            frame(inbox / "cam" / "c.bmp")
        taken.append(claimed)

    claims.claim_ready(take)
    assert [str(claimed.relative) for claimed in taken] == ["cam/a.bmp", "cam/c.bmp"]
    assert (outside / "cam" / "b.bmp").exists() and len(os.listdir(area)) == 2


def test_a_path_out_of_the_inbox_is_never_claimed(tmp_path: Path) -> None:
    inbox, area, outside = layout(tmp_path)
    frame(inbox / "cam" / "x.bmp")
    victim = frame(outside / "secret.bmp")
    for relative in ("cam/../../outside/secret.bmp", str(outside / "secret.bmp"), "cam/.hidden/x.bmp"):
        assert claim(inbox, area, PurePosixPath(relative)) is None, relative
    assert victim.exists() and os.listdir(area) == []
