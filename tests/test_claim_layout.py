"""The in-progress area's layout: a claim is one name in the area (key, '=', the escaped inbox
path), a long name a folder of its own, a deep path flat; recovery reads every layout back, those
of earlier versions included, and a released claim leaves nothing behind."""

from __future__ import annotations

import os
import pickle
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.synthetic import write_bmp
from watcher.intake import suspects
from watcher.intake.claim_names import claimed_name, is_claimed_name, parse_claimed_name
from watcher.intake.claimed import FLAT_NAME, ClaimedFrame
from watcher.intake.claiming import (
    MAX_NESTED_PARTS,
    SOURCE_FILE,
    claim,
    claimed_frames,
    release,
)
from watcher.intake.readiness import Look, Verdict
from watcher.pipeline.file_work import ClaimOutcome, claim_answer, claim_outcome, sync_claims
from watcher.service.status_probes import frames_per_area

KEY = "0123456789abcdef0123456789abcdef"
# Too long for one directory entry and nested too deep for a folder of its own: claimed flat.
DEEP_AND_LONG = "/".join(["d" * 10] * (MAX_NESTED_PARTS + 1)) + "/x.bmp"

# Path parts as a hostile inbox can hold them: any bytes but '/' and NUL (non-UTF-8 ones arrive
# surrogate-escaped, as os.listdir gives them), '%', '=' and '%2F' among them.
_part_bytes = st.binary(min_size=1, max_size=40).filter(lambda raw: b"/" not in raw and b"\0" not in raw)
_parts = (
    st.one_of(_part_bytes, st.sampled_from([b"%", b"%2F", b"%25", b"=", b"a=b", b"%%2F"]))
    .map(os.fsdecode)
    .filter(lambda part: not part.startswith("."))  # the inbox's scan never yields hidden parts
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_parts, min_size=1, max_size=6))
def test_a_claimed_name_gives_back_its_key_and_path(parts: list[str]) -> None:
    relative = PurePosixPath(*parts)
    name = claimed_name(KEY, relative)
    assert b"/" not in name
    assert parse_claimed_name(os.fsdecode(name)) == (KEY, relative)


@settings(max_examples=300, deadline=None)
@given(st.lists(_parts, min_size=1, max_size=6), st.lists(_parts, min_size=1, max_size=6))
def test_a_claimed_name_is_told_as_text_as_its_bytes_tell_it(parts: list[str], other: list[str]) -> None:
    # is_claimed_name compares text, claimed_name bytes: they must agree on every name, hostile
    # bytes (surrogate-escaped) and the escapes' own characters included.
    relative, elsewhere = PurePosixPath(*parts), PurePosixPath(*other)
    name = os.fsdecode(claimed_name(KEY, relative))
    assert is_claimed_name(name, KEY, relative)
    assert is_claimed_name(name, KEY, elsewhere) == (claimed_name(KEY, elsewhere) == os.fsencode(name))
    assert not is_claimed_name(name, KEY.replace("0", "f"), relative)


@settings(max_examples=100, deadline=None)
@given(st.lists(_parts, min_size=1, max_size=6), st.booleans())
def test_a_claimed_frame_crosses_to_a_file_process_unchanged(parts: list[str], recovered: bool) -> None:
    relative = PurePosixPath(*parts)
    area = Path("/srv/inbox/.in-progress/host-1")
    frame = ClaimedFrame(
        key=KEY,
        relative=relative,
        work_path_text=str(area / os.fsdecode(claimed_name(KEY, relative))),
        received_at=datetime(2026, 11, 26, 22, 40, 1, 123456, tzinfo=UTC),
        source_dir=None if recovered else (Path("/srv/inbox") / relative).parent,
    )
    assert frame.key_dir is None  # computed and cached: not part of what is sent

    copy = pickle.loads(pickle.dumps(frame))

    assert (
        copy == frame
        and type(copy.relative) is PurePosixPath
        and type(copy.work_path) is type(frame.work_path)
    )
    assert copy.key_dir is None and copy.area == area


@settings(max_examples=100, deadline=None)
@given(st.lists(_parts, min_size=1, max_size=6), st.sampled_from(["claimed", "refused", "settling"]))
def test_what_became_of_a_name_crosses_back_unchanged(parts: list[str], outcome: str) -> None:
    # A file process's answer for every name it was given, paired back with the name the daemon
    # sent: the outcome is the one the process had, and the frame's inbox path is the daemon's
    # own object (not parsed again, its hash already known to the waiting list).
    relative = PurePosixPath(*parts)
    frame = ClaimedFrame(
        key=KEY,
        relative=relative,
        work_path_text=str(Path("/srv/inbox/.in-progress/host-1") / os.fsdecode(claimed_name(KEY, relative))),
        received_at=datetime(2026, 11, 27, 1, 40, 1, 123456, tzinfo=UTC),
        source_dir=Path("/srv/inbox") / relative.parent,
    )
    sent = ClaimOutcome(
        relative,
        frame=frame if outcome == "claimed" else None,
        verdict=Verdict.SETTLING if outcome == "settling" else None,
        looked=Look(size=10, mtime_ns=5, declared_size=20) if outcome == "settling" else None,
        refused="not writable" if outcome == "refused" else None,
    )
    held = PurePosixPath(str(relative))  # the daemon's own object for the name

    copy = claim_outcome(held, pickle.loads(pickle.dumps(claim_answer(sent))))

    assert copy == sent and copy.relative is held
    if outcome == "claimed":
        assert copy.frame is not None and copy.frame.relative is held
        assert type(copy.frame.work_path) is type(frame.work_path)
        assert type(copy.frame.source_dir) is type(frame.source_dir)


@pytest.mark.parametrize(
    "name", [".clean-stop", ".attempts-" + KEY, KEY, "x.bmp", "Z" * 32 + "=x.bmp", KEY + "="]
)
def test_other_names_in_the_area_are_not_claims(name: str) -> None:
    assert parse_claimed_name(name) is None


def _claim(inbox: Path, area: Path, relative: str) -> ClaimedFrame:
    write_bmp(inbox / relative)
    frame = claim(inbox, area, PurePosixPath(relative))
    assert frame is not None
    return frame


def test_a_claim_is_one_name_in_the_area_and_recovery_reads_it_back(tmp_path: Path) -> None:
    inbox, area = tmp_path / "inbox", tmp_path / "inbox" / ".in-progress" / "a"
    area.mkdir(parents=True)
    frame = _claim(inbox, area, "site-a/cam%2F07/x=1.bmp")
    assert frame.key_dir is None and frame.area == area
    assert os.listdir(area) == [os.fsdecode(claimed_name(frame.key, frame.relative))]
    assert frame.claim_dirs == [area, inbox / "site-a" / "cam%2F07"]
    sync_claims([frame])

    (recovered,) = claimed_frames(area)
    assert (recovered.key, recovered.relative, recovered.work_path) == (
        frame.key,
        frame.relative,
        frame.work_path,
    )
    assert recovered.key_dir is None
    assert frames_per_area(area.parent) == {"a": 1}


def test_a_name_too_long_for_one_entry_is_claimed_in_a_folder_and_a_deep_one_flat(tmp_path: Path) -> None:
    inbox, area = tmp_path / "inbox", tmp_path / "inbox" / ".in-progress" / "a"
    area.mkdir(parents=True)
    long_name = "cam-01/" + "n" * 240 + ".bmp"  # fits a directory entry alone, not after the key
    deep = DEEP_AND_LONG
    in_folder, flat = _claim(inbox, area, long_name), _claim(inbox, area, deep)

    assert in_folder.key_dir == area / in_folder.key
    assert in_folder.work_path == area / in_folder.key / long_name
    assert flat.key_dir == area / flat.key and flat.work_path.name == FLAT_NAME
    assert (flat.key_dir / SOURCE_FILE).read_bytes() == deep.encode()
    for frame in (in_folder, flat):
        assert frame.area == area and frame.attempts_path.parent == frame.key_dir

    recovered = {frame.key: frame for frame in claimed_frames(area)}
    assert {key: (frame.relative, frame.work_path) for key, frame in recovered.items()} == {
        in_folder.key: (in_folder.relative, in_folder.work_path),
        flat.key: (flat.relative, flat.work_path),
    }
    assert frames_per_area(area.parent) == {"a": 2}


def test_an_area_left_by_an_earlier_version_is_recovered_as_it_is(tmp_path: Path) -> None:
    # Before claims were one name each, every claim was a folder: <key>/<inbox path>.
    area = tmp_path / "area"
    old = area / KEY / "cam-01" / "x.bmp"
    write_bmp(old)
    (area / KEY / ".attempts").write_text("2\n")

    (frame,) = claimed_frames(area)
    assert (frame.key, frame.relative, frame.work_path, frame.key_dir) == (
        KEY,
        PurePosixPath("cam-01/x.bmp"),
        old,
        area / KEY,
    )
    assert suspects.crashes_survived(frame) == 2
    old.unlink()  # moved out, as after its commit
    release(frame)
    assert list(area.iterdir()) == []


def test_a_released_claim_leaves_nothing_behind(tmp_path: Path) -> None:
    inbox, area = tmp_path / "inbox", tmp_path / "area"
    area.mkdir()
    frames = [
        _claim(inbox, area, "site-a/cam-07/x.bmp"),
        _claim(inbox, area, "y.bmp"),
        _claim(inbox, area, "cam-01/" + "n" * 240 + ".bmp"),
        _claim(inbox, area, DEEP_AND_LONG),
    ]
    suspects.record_attempt(frames[0], 2)  # a suspect's count goes with its claim
    assert suspects.crashes_survived(frames[0]) == 2
    for frame in frames:
        frame.work_path.unlink()  # moved out, as after its commit
        release(frame)
    assert list(area.iterdir()) == []

    # Something unexpected in a claim's folder: it still goes.
    odd = _claim(inbox, area, "cam-01/" + "z" * 240 + ".bmp")
    assert odd.key_dir is not None
    (odd.work_path.parent / "stray.tmp").write_bytes(b"x")
    odd.work_path.unlink()
    release(odd)
    assert list(area.iterdir()) == []


def test_a_count_of_crashes_left_without_its_claim_is_removed_by_recovery(tmp_path: Path) -> None:
    inbox, area = tmp_path / "inbox", tmp_path / "area"
    area.mkdir()
    kept, gone = _claim(inbox, area, "cam/a.bmp"), _claim(inbox, area, "cam/b.bmp")
    suspects.record_attempt(kept, 2)
    suspects.record_attempt(gone, 2)
    gone.work_path.unlink()  # moved out; the daemon died before releasing the claim

    (recovered,) = claimed_frames(area)
    assert recovered.key == kept.key and suspects.crashes_survived(recovered) == 2
    assert sorted(os.listdir(area)) == sorted([kept.work_path.name, kept.attempts_path.name])


def test_the_area_made_again_when_it_vanished(tmp_path: Path) -> None:
    inbox, area = tmp_path / "inbox", tmp_path / "inbox" / ".in-progress" / "a"
    frame = _claim(inbox, area, "cam/x.bmp")  # the area was never made (or removed under us)
    assert frame.work_path.parent == area and frame.work_path.is_file()


def test_a_frame_gone_before_its_claim_is_none(tmp_path: Path) -> None:
    area = tmp_path / "area"
    area.mkdir()
    assert claim(tmp_path / "inbox", area, PurePosixPath("cam/gone.bmp")) is None
    assert list(area.iterdir()) == []


@pytest.mark.parametrize(
    "escaped",
    [
        "a%2Fb%2Fc%2F",  # a trailing '/': the path read back would name another file
        "a%2F%2Fb.bmp",
        "a%2F.%2Fb.bmp",
        "50%.bmp",  # a lone '%'
        "a%2fb.bmp",  # lower case
        "%2Fetc%2Fcron.d%2Fevil",  # absolute
        "..%2F..%2Fevil.bmp",
        ".",
        "..",
        "cam%2F.hidden.bmp",
    ],
)
def test_a_name_the_daemon_never_writes_is_left_alone(tmp_path: Path, escaped: str) -> None:
    # Dropped into the area by hand: no claim, so recovery never moves it (to a path outside the
    # output folder, say) and releasing nothing can remove the area or the inbox around it.
    inbox = tmp_path / "inbox"
    area = inbox / ".in-progress" / "a"
    area.mkdir(parents=True)
    write_bmp(inbox / "cam-01" / "waiting.bmp")
    stray = area / f"{KEY}={escaped}"
    stray.write_bytes(b"BM")
    assert parse_claimed_name(stray.name) is None
    assert claimed_frames(area) == []
    assert frames_per_area(area.parent) == {"a": 0}
    assert stray.is_file() and (inbox / "cam-01" / "waiting.bmp").is_file()


def test_a_flat_claim_whose_source_is_no_inbox_path_is_left_alone(tmp_path: Path) -> None:
    area = tmp_path / "area"
    flat = area / KEY
    write_bmp(flat / FLAT_NAME)
    (flat / SOURCE_FILE).write_bytes(b"../../outside.bmp")  # an inbox path no scan gives
    assert claimed_frames(area) == []
    assert (flat / FLAT_NAME).is_file()


def test_release_removes_nothing_but_the_claims_own_folder(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    write_bmp(inbox / "cam" / "x.bmp")
    # A frame whose work path does not sit in a folder named by its key (never made by claim).
    odd = ClaimedFrame(
        key=KEY,
        relative=PurePosixPath("cam/x.bmp"),
        work_path_text=str(inbox / "cam" / "x.bmp"),
        received_at=datetime.now(UTC),
    )
    release(odd)
    assert (inbox / "cam" / "x.bmp").is_file()


def test_a_frame_named_frame_deep_in_a_folder_claim_keeps_its_count_in_the_folder(tmp_path: Path) -> None:
    inbox, area = tmp_path / "inbox", tmp_path / "area"
    area.mkdir()
    frame = _claim(inbox, area, "c/" + "d" * 240 + "/frame")  # too long for one name: a folder
    assert frame.key_dir == area / frame.key
    suspects.record_attempt(frame, 2)
    (recovered,) = claimed_frames(area)
    assert recovered.relative == frame.relative and suspects.crashes_survived(recovered) == 2


def test_a_folder_put_in_the_area_by_hand_is_no_claim_and_is_left_alone(tmp_path: Path) -> None:
    # Only a folder named by a frame key is a claim in a folder of its own: another was taken for
    # one (its frame moved out under the key `notes`), or removed whole when it held no frame.
    area = tmp_path / "inbox" / ".in-progress" / "a"
    write_bmp(area / "notes" / "x.bmp")
    (area / "backup").mkdir()
    (area / "backup" / ".keep").write_bytes(b"mine")
    assert claimed_frames(area) == []
    assert frames_per_area(area.parent) == {"a": 0}
    assert (area / "notes" / "x.bmp").is_file() and (area / "backup" / ".keep").read_bytes() == b"mine"
