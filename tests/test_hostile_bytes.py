"""Frames whose bytes lie or change under the daemon: each ends with one true row and its file in
failed/ (or processed/), and the rest of its batch is classified as it would be alone."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from model.clip_features import ClipFeatureExtractor
from model.dataset import LabelledImage
from model.extraction import extract_labelled
from model.feature_cache import FeatureCache
from model.images import UndecodableImage, decode_pixels
from model.labels import Label
from model.runtime import Runtime
from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import files_under, query
from watcher.commands.main import main
from watcher.intake.claimed import ClaimedFrame
from watcher.pipeline import decoding
from watcher.pipeline.decoding import Room, read_and_decode
from watcher.pipeline.stages import FrameBounds
from watcher.service.metrics import reason_kind

BOUNDS = FrameBounds(max_pixels=10**7, max_file_bytes=10**7)


def _bmp(width: int, height: int, *, offset: int | None = None, header_size: int = 40) -> bytes:
    """A 24-bit BMP of these header fields, its rows (zeros) as a 64x48 frame's."""
    info = struct.pack("<IiiHHIIiiII", header_size, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    info += bytes(header_size - len(info))
    pixels = bytes(192 * 48)
    total = 14 + len(info) + len(pixels)
    return (
        b"BM"
        + struct.pack("<IHHI", total, 0, 0, 14 + len(info) if offset is None else offset)
        + info
        + pixels
    )


# Headers that describe no picture: file name → the bytes and the reason in its row. The first three
# were classified as complete pictures (rows shifted over the headers' bytes); Pillow called the
# fourth truncated, the negative width a decompression bomb and zero sides "not a recognised image
# format".
NO_PICTURE = {
    "offset-in-file-header.bmp": (
        _bmp(64, 48, offset=10),
        "invalid pixel data offset 10: inside its 54 bytes of BMP headers",
    ),
    "offset-in-v5-header.bmp": (
        _bmp(64, 48, offset=60, header_size=124),
        "invalid pixel data offset 60: inside its 138 bytes of BMP headers",
    ),
    "header-size-41.bmp": (
        _bmp(64, 48, offset=54, header_size=41),
        "invalid pixel data offset 54: inside its 55 bytes of BMP headers",
    ),
    "offset-past-end.bmp": (
        _bmp(64, 48, offset=10**6),
        "invalid pixel data offset 1000000: its 9270 bytes end before any pixel",
    ),
    "width-negative.bmp": (_bmp(-64, 48), "invalid dimensions -64x48 in its BMP header"),
    "width-zero.bmp": (_bmp(0, 48), "invalid dimensions 0x48 in its BMP header"),
    "height-zero.bmp": (_bmp(64, 0), "invalid dimensions 64x0 in its BMP header"),
}


@pytest.mark.parametrize("file_processes", [0, 2], ids=["threads", "file_processes"])
def test_a_header_that_describes_no_picture_fails_that_frame_with_what_is_wrong(
    make_config: Callable[..., Path], tmp_path: Path, file_processes: int
) -> None:
    config = make_config(batch={"size": 16, "file_processes": file_processes})
    goods = {f"good-{index}.bmp": bmp_bytes(width=40 + index, height=30, seed=index) for index in range(4)}
    for name, data in {**goods, **{name: data for name, (data, _) in NO_PICTURE.items()}}.items():
        (tmp_path / "inbox" / "cam-01").mkdir(parents=True, exist_ok=True)
        (tmp_path / "inbox" / "cam-01" / name).write_bytes(data)
    assert main(["watch", "--once", "--config", str(config)]) == 0
    rows = {  # refused once read and hashed, as any undecodable frame is: its sha256 kept
        row[0].removeprefix("cam-01/"): row[1:]
        for row in query(
            tmp_path / "data" / "results.sqlite3", "SELECT source_path, status, error, sha256 FROM results"
        )
    }
    assert rows == {
        **{
            name: ("failed", reason, hashlib.sha256(data).hexdigest())
            for name, (data, reason) in NO_PICTURE.items()
        },
        **{name: ("ok", None, hashlib.sha256(data).hexdigest()) for name, data in goods.items()},
    }
    assert files_under(tmp_path / "failed") == sorted(f"cam-01/{name}" for name in NO_PICTURE)
    assert files_under(tmp_path / "processed") == sorted(f"cam-01/{name}" for name in goods)
    assert files_under(tmp_path / "inbox") == []


@pytest.mark.parametrize("name", sorted(NO_PICTURE))
def test_training_refuses_a_header_that_describes_no_picture_as_the_daemon_does(name: str) -> None:
    # decode_pixels is what training and evaluation decode with (model.extraction): a frame the
    # daemon fails is skipped there with the same reason, not learnt as a picture of header bytes.
    data, reason = NO_PICTURE[name]
    with pytest.raises(UndecodableImage) as refused:
        decode_pixels(data, max_pixels=BOUNDS.max_pixels)
    assert str(refused.value) == reason


def test_training_refuses_such_a_header_even_with_its_feature_cached(tiny_clip: Path, tmp_path: Path) -> None:
    # Training before decode_pixels checked the header cached a feature for each of these (and for a
    # frame under a larger inbox.max_pixels): the cache, looked up before decoding, handed it back.
    extractor = ClipFeatureExtractor(
        str(tiny_clip), runtime=Runtime(device=torch.device("cpu"), precision="fp32")
    )
    cache = FeatureCache(tmp_path / "cache", clip_model="tiny", preprocessing_version="1", engine="cpu")
    frames = {
        **NO_PICTURE,
        "over-max-pixels.bmp": (_bmp(80, 60), "too large: 80x60 is over the cap of 4000 pixels"),
    }
    images = []
    for name, (data, _) in frames.items():
        (tmp_path / "FEMALE").mkdir(exist_ok=True)
        (tmp_path / "FEMALE" / name).write_bytes(data)
        images.append(LabelledImage(tmp_path / "FEMALE" / name, Label.FEMALE, root=tmp_path))
        cache.put(hashlib.sha256(data).hexdigest(), np.ones(extractor.feature_size, np.float32))

    extracted = extract_labelled(
        images,
        extractor=extractor,
        cache=cache,
        batch_size=8,
        max_pixels=4000,
        max_file_bytes=BOUNDS.max_file_bytes,
        progress=False,
    )

    assert extracted.skipped == {f"FEMALE/{name}": reason for name, (_, reason) in frames.items()}
    assert (extracted.items, extracted.cache_hits) == ([], 0)


def _grows_after_the_look(monkeypatch: pytest.MonkeyPatch, path: Path, more: bytes) -> None:
    """The writer of `path` appends `more` through the handle it still holds (a claim's rename does
    not stop it) once the daemon has looked at the file's size and header, before the read."""
    writer = path.open("ab", buffering=0)
    size = path.stat().st_size
    looked = decoding.check_before_reading

    def and_then_written(head: bytes, file_size: int, **bounds: int) -> None:
        looked(head, file_size, **bounds)
        if file_size == size and not writer.closed:  # this frame's read, not another's
            writer.write(more)
            writer.close()

    monkeypatch.setattr(decoding, "check_before_reading", and_then_written)


def test_a_frame_still_growing_when_read_fails_as_still_being_written(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read, it was a prefix of a file that never had that size: classified on it, its row said
    size N + 1 and a sha256 of no file, while processed/ got the whole file."""
    config = make_config(batch={"size": 8, "file_processes": 0})
    first = bmp_bytes(width=64, height=48, seed=1)
    (tmp_path / "inbox" / "cam-01").mkdir(parents=True)
    (tmp_path / "inbox" / "cam-01" / "growing.bmp").write_bytes(first)
    write_bmp(tmp_path / "inbox" / "cam-01" / "still.bmp", width=40, height=30, seed=2)
    _grows_after_the_look(monkeypatch, tmp_path / "inbox" / "cam-01" / "growing.bmp", b"\x01" * 4096)
    assert main(["watch", "--once", "--config", str(config)]) == 0
    still = bmp_bytes(width=40, height=30, seed=2)
    rows = query(
        tmp_path / "data" / "results.sqlite3",
        "SELECT source_path, status, error, size_bytes, sha256 FROM results ORDER BY source_path",
    )
    assert rows == [
        (
            "cam-01/growing.bmp",
            "failed",
            f"still being written: it grew past {len(first)} bytes while being read",
            len(first),
            None,
        ),
        ("cam-01/still.bmp", "ok", None, len(still), hashlib.sha256(still).hexdigest()),
    ]
    assert files_under(tmp_path / "failed") == ["cam-01/growing.bmp"]
    assert files_under(tmp_path / "processed") == ["cam-01/still.bmp"]
    assert files_under(tmp_path / "inbox") == []


@pytest.mark.parametrize("into", ["own memory", "arena room"])
def test_a_frame_growing_while_read_into_either_place_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, into: str
) -> None:
    """The same in a file worker, which reads into its share of a batch's arena."""
    path = tmp_path / "growing.bmp"
    first = bmp_bytes(width=64, height=48, seed=3)
    path.write_bytes(first)
    _grows_after_the_look(monkeypatch, path, b"\x01" * 10)
    frame = ClaimedFrame(
        key="k", relative=PurePosixPath(path.name), work_path_text=str(path), received_at=datetime.now(UTC)
    )
    room = Room(memoryview(bytearray(1 << 20)), 64, 1 << 20) if into == "arena room" else None
    read = read_and_decode(frame, BOUNDS, None, room)
    assert read.error == f"still being written: it grew past {len(first)} bytes while being read"
    assert (read.pixels, read.block, read.facts.sha256) == (None, None, None)
    assert read.facts.size_bytes == len(first)
    assert reason_kind(read.error) == "truncated"  # its writer's doing, as a frame given up on
