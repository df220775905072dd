"""Training and evaluation skip, with the daemon's own reason, every frame the daemon fails for its
bytes alone, and keep every frame it classifies: the same file, read by the daemon (`watch --once`,
or its read_and_decode) and by the extraction training and evaluation share (extract_labelled)."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.clip_features import ClipFeatureExtractor
from model.dataset import LabelledImage
from model.extraction import extract_labelled
from model.images import DECLARED_SIZE_SLACK
from model.labels import Label
from model.runtime import Runtime
from model.synthetic import bmp_bytes
from tests.helpers import query
from watcher.commands.main import main
from watcher.intake.claimed import ClaimedFrame
from watcher.pipeline.decoding import read_and_decode
from watcher.pipeline.stages import FrameBounds

BOUNDS = FrameBounds(max_pixels=10**6, max_file_bytes=100_000)
GOOD = bmp_bytes(width=64, height=48, seed=1)  # 9270 bytes, pixels from byte 54
SIZE = len(GOOD)


def _with(
    data: bytes,
    *,
    declared: int | None = None,
    offset: int | None = None,
    sides: tuple[int, int] | None = None,
) -> bytes:
    """`data` with its BMP header's declared size, pixel data offset or sides replaced."""
    patched = bytearray(data)
    if declared is not None:
        struct.pack_into("<I", patched, 2, declared)
    if offset is not None:
        struct.pack_into("<I", patched, 10, offset)
    if sides is not None:
        struct.pack_into("<ii", patched, 18, *sides)
    return bytes(patched)


# File name → its bytes and the daemon's verdict: the reason it fails the frame, or None (classified).
CASES: dict[str, tuple[bytes, str | None]] = {
    "good.bmp": (GOOD, None),
    # Every pixel row is there, but the header declares more: the daemon fails it as its writer's
    # unfinished work; training learnt it.
    "declared-one-byte-more.bmp": (
        _with(GOOD, declared=SIZE + 1),
        f"truncated: {SIZE} of {SIZE + 1} declared bytes",
    ),
    "declared-far-more.bmp": (
        _with(GOOD, declared=2**32 - 1),
        f"truncated: {SIZE} of {2**32 - 1} declared bytes",
    ),
    "last-row-cut.bmp": (GOOD[:-192], f"truncated: {SIZE - 192} of {SIZE} declared bytes"),
    "headers-only.bmp": (GOOD[:54], f"truncated: 54 of {SIZE} declared bytes"),
    "empty.bmp": (b"", "truncated: empty file (0 bytes)"),
    "five-bytes.bmp": (b"BM\x00\x00\x00", "truncated: 5 bytes, too short for a BMP header"),
    "one-byte.bmp": (b"x", "truncated: 1 bytes, too short for a BMP header"),
    # Truncated is said before what else is wrong with its header.
    "truncated-offset-in-headers.bmp": (
        _with(GOOD, declared=SIZE + 1, offset=10),
        f"truncated: {SIZE} of {SIZE + 1} declared bytes",
    ),
    "truncated-offset-past-end.bmp": (
        _with(GOOD[:-1], offset=10**6),
        f"truncated: {SIZE - 1} of {SIZE} declared bytes",
    ),
    # Declaring fewer bytes than there are, or none, is no reason to fail a frame.
    "declared-one-byte-less.bmp": (_with(GOOD, declared=SIZE - 1), None),
    "declared-zero.bmp": (_with(GOOD, declared=0), None),
    "declared-25.bmp": (_with(GOOD, declared=25), None),
    "offset-in-headers.bmp": (
        _with(GOOD, offset=10),
        "invalid pixel data offset 10: inside its 54 bytes of BMP headers",
    ),
    "offset-past-end.bmp": (
        _with(GOOD, offset=SIZE),
        f"invalid pixel data offset {SIZE}: its {SIZE} bytes end before any pixel",
    ),
    "offset-one-row-late.bmp": (_with(GOOD, offset=54 + 192), "cannot decode: image file is truncated"),
    "over-the-pixel-cap.bmp": (
        _with(GOOD, sides=(2000, 1000)),
        f"too large: 2000x1000 is over the cap of {BOUNDS.max_pixels} pixels",
    ),
    "not-an-image.bmp": (b"hello, this is text" * 10, "not a recognised image format"),
    # Refused from the size and the header before the rest is read; training read and learnt them.
    "trailing-64KiB.bmp": (GOOD + bytes(DECLARED_SIZE_SLACK), None),
    "trailing-64KiB-and-one.bmp": (
        GOOD + bytes(DECLARED_SIZE_SLACK + 1),
        f"too large: {SIZE + DECLARED_SIZE_SLACK + 1} bytes on disk, its header declares {SIZE}",
    ),
    "declared-26.bmp": (
        _with(GOOD, declared=26) + bytes(DECLARED_SIZE_SLACK),
        f"too large: {SIZE + DECLARED_SIZE_SLACK} bytes on disk, its header declares 26",
    ),
    "over-max-file-bytes.bmp": (
        bmp_bytes(width=200, height=170, seed=2),
        f"too large: 102054 bytes (inbox.max_file_bytes is {BOUNDS.max_file_bytes})",
    ),
    "text-over-max-file-bytes.bmp": (
        b"x" * (BOUNDS.max_file_bytes + 1),
        f"too large: {BOUNDS.max_file_bytes + 1} bytes (inbox.max_file_bytes is {BOUNDS.max_file_bytes})",
    ),
    # ... and so before truncated, which is only seen once it has been read.
    "truncated-over-the-pixel-cap.bmp": (
        _with(GOOD, declared=SIZE + 1, sides=(2000, 1000)),
        f"too large: 2000x1000 is over the cap of {BOUNDS.max_pixels} pixels",
    ),
    "truncated-too-thin.bmp": (
        _with(GOOD, declared=SIZE + 1, sides=(64, 2000)),
        "too large: 64x2000 is over the aspect ratio cap of 20:1 (resizing it for CLIP would take gigabytes)",
    ),
}


@pytest.fixture(scope="module")
def extractor(tiny_clip: Path) -> ClipFeatureExtractor:
    return ClipFeatureExtractor(str(tiny_clip), runtime=Runtime(device=torch.device("cpu"), precision="fp32"))


def _daemon_verdict(path: Path) -> str | None:
    frame = ClaimedFrame(
        key="k", relative=PurePosixPath(path.name), work_path_text=str(path), received_at=datetime.now(UTC)
    )
    return read_and_decode(frame, BOUNDS).error


def _training_verdicts(extractor: ClipFeatureExtractor, paths: list[Path]) -> dict[str, str | None]:
    """Each file's reason for being skipped by training, or None when it was learnt from."""
    images = [LabelledImage(path, Label.FEMALE, root=path.parent.parent) for path in paths]
    extracted = extract_labelled(
        images,
        extractor=extractor,
        cache=None,
        batch_size=4,
        max_pixels=BOUNDS.max_pixels,
        max_file_bytes=BOUNDS.max_file_bytes,
        progress=False,
    )
    kept = {item.name for item in extracted.items}
    assert kept.isdisjoint(extracted.skipped)
    return {image.name: extracted.skipped.get(image.name) for image in images}


def _written(folder: Path, frames: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in frames.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in frames]


def _reason_only(reason: str | None) -> str | None:
    """A reason without Pillow's count of the bytes it left (which may change with its version)."""
    return re.sub(r" \(\d+ bytes not processed\)$", "", reason) if reason is not None else None


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_daemon_fails_each_frame_as_the_table_says(tmp_path: Path, name: str) -> None:
    data, reason = CASES[name]
    (path,) = _written(tmp_path, {name: data})
    assert _reason_only(_daemon_verdict(path)) == reason


def test_training_skips_each_frame_with_the_daemons_reason(
    extractor: ClipFeatureExtractor, tmp_path: Path
) -> None:
    paths = _written(tmp_path / "FEMALE", {name: data for name, (data, _) in CASES.items()})
    training = _training_verdicts(extractor, paths)
    assert {name: _reason_only(reason) for name, reason in training.items()} == {
        f"FEMALE/{name}": reason for name, (_, reason) in CASES.items()
    }
    assert training == {f"FEMALE/{path.name}": _daemon_verdict(path) for path in paths}


@pytest.mark.parametrize("file_processes", [0, 2], ids=["threads", "file_processes"])
def test_watch_once_fails_what_training_skips(
    make_config: Callable[..., Path], extractor: ClipFeatureExtractor, tmp_path: Path, file_processes: int
) -> None:
    """The real daemon, its frames read in its own threads or into a batch's shared memory by file
    processes, stores for each frame the reason training skips it with (null: learnt from)."""
    config = make_config(
        inbox={"max_pixels": BOUNDS.max_pixels, "max_file_bytes": BOUNDS.max_file_bytes},
        batch={"file_processes": file_processes},
    )
    inbox = _written(tmp_path / "inbox" / "cam-01", {name: data for name, (data, _) in CASES.items()})
    an_hour_ago = datetime.now(UTC).timestamp() - 3600
    for path in inbox:  # no writes for longer than inbox.readiness_timeout_s: given up, not waited on
        os.utime(path, (an_hour_ago, an_hour_ago))
    training = _training_verdicts(
        extractor,
        _written(tmp_path / "labelled" / "FEMALE", {name: data for name, (data, _) in CASES.items()}),
    )
    assert main(["watch", "--once", "--config", str(config)]) == 0
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, error FROM results")
    assert {source.replace("cam-01/", "FEMALE/"): error for source, error in rows} == training


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sides=st.one_of(st.none(), st.tuples(st.integers(-3, 3000), st.integers(-3000, 3000))),
    offset=st.one_of(st.none(), st.integers(0, 12_000)),
    declared=st.one_of(
        st.none(),
        st.integers(-400, 400).map(lambda delta: max(0, SIZE + delta)),
        st.integers(0, 2**32 - 1),
    ),
    cut=st.integers(0, 400),
    trailing=st.one_of(
        st.sampled_from([DECLARED_SIZE_SLACK, DECLARED_SIZE_SLACK + 1]),
        st.integers(0, 2 * DECLARED_SIZE_SLACK),
    ),
)
def test_any_header_and_length_is_judged_alike(
    extractor: ClipFeatureExtractor,
    tmp_path: Path,
    sides: tuple[int, int] | None,
    offset: int | None,
    declared: int | None,
    cut: int,
    trailing: int,
) -> None:
    """The daemon's verdict on a frame of any header and length, and training's, are one."""
    data = _with(GOOD, declared=declared, offset=offset, sides=sides)
    (path,) = _written(tmp_path / "FEMALE", {"frame.bmp": data[: len(data) - cut] + bytes(trailing)})
    assert _training_verdicts(extractor, [path]) == {"FEMALE/frame.bmp": _daemon_verdict(path)}
