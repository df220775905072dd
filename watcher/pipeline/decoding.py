"""Stage one: a claimed frame's file read, checked, hashed and decoded (Claimed → Decoded).

Reading, hashing and decoding release the GIL: a thread pool keeps several cores busy on them
while the model works on the batch before. Whatever one frame's bytes do, the failure is that
frame's, recorded in its `Decoded.error`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from model.images import (
    HEADER_BYTES,
    PixelBlock,
    UndecodableImage,
    check_before_reading,
    check_complete_frame,
    decode_pixels,
    plain_bmp_block,
)
from watcher.faults import kill_on_frame
from watcher.frozen import frozen_when_checked
from watcher.pipeline.stages import Claimed, Decoded, FileFacts, FrameBounds

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_PAGE = 4096  # the x86 page: where a copy starts within one is what its speed depends on


class Decoder:
    def __init__(self, bounds: FrameBounds, *, workers: int) -> None:
        self._bounds = bounds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._prefetched: dict[str, Future[Decoded]] = {}

    def prefetch(self, frame: Claimed) -> None:
        """Start on a frame now, before its batch is processed."""
        self._prefetched[frame.key] = self._pool.submit(self.decode, frame)

    def decode_all(self, frames: list[Claimed], *, refused: dict[str, str]) -> list[Decoded]:
        """Every frame decoded (prefetched ones as they finish); those in `refused` (key → reason)
        fail with that reason without being opened (see watcher.intake.suspects)."""
        pending = [
            self._prefetched.pop(frame.key)
            if frame.key in self._prefetched
            else self._pool.submit(self.decode, frame, refused.get(frame.key))
            for frame in frames
        ]
        return [future.result() for future in pending]

    def forget(self, frames: list[Claimed]) -> None:
        """Prefetches of `frames` dropped (cancelled if not started)."""
        for frame in frames:
            future = self._prefetched.pop(frame.key, None)
            if future is not None:
                future.cancel()

    def run_beside(self, work: Callable[[], _T]) -> Future[_T]:
        """Run other file work on the pool (fsyncs that wait for the disk while the model runs)."""
        return self._pool.submit(work)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def decode(self, frame: Claimed, refused: str | None = None) -> Decoded:
        read = read_and_decode(frame, self._bounds, refused)
        return Decoded(frame, read.facts, read.pixels, read.error)


@dataclass(frozen=True)
class Room:
    """Where a frame's bytes may be read to: `buffer[start:end]` (a shared batch buffer)."""

    buffer: memoryview
    start: int
    end: int


@frozen_when_checked  # made for every frame (see watcher.frozen)
class FileRead:
    """What reading one frame gave: its facts, and its pixels decoded (`pixels`), or still where
    they were read to in a Room (`block`, a plain 24-bit BMP), or the reason there are none."""

    facts: FileFacts
    pixels: np.ndarray | None = None
    block: PixelBlock | None = None
    error: str | None = None


def read_and_decode(
    frame: Claimed, bounds: FrameBounds, refused: str | None = None, room: Room | None = None
) -> FileRead:
    """Read, hash and decode one frame (into `room` when given and large enough). Whatever the
    frame's bytes do, the failure is that frame's, in the FileRead's `error`."""
    facts = FileFacts()
    try:
        if refused is not None:
            raise UndecodableImage(refused)
        data, facts = read_frame(frame, bounds, room)
        kill_on_frame(frame.relative)
        facts = replace(facts, sha256=hashlib.sha256(data).hexdigest())
        check_complete_frame(data, max_pixels=bounds.max_pixels)
        # Read into the room (it was large enough): a plain BMP's pixels stay there.
        in_room = room is not None and data.obj is room.buffer.obj
        block = plain_bmp_block(data, max_pixels=bounds.max_pixels) if in_room else None
        if block is not None and room is not None:
            facts = replace(facts, width=block.width, height=block.rows)
            return FileRead(facts, block=block.moved(room.start))
        pixels = decode_pixels(data, max_pixels=bounds.max_pixels)
        height, width = pixels.shape[:2]
        return FileRead(
            replace(facts, width=width, height=height),
            pixels=np.ascontiguousarray(pixels) if room else pixels,
        )
    except UndecodableImage as error:
        reason = str(error)
    except _ReadFailed as failed:
        facts, reason = failed.facts, failed.reason
    except OSError as error:
        reason = f"cannot read: {error.strerror or error}"
    except Exception as error:  # noqa: BLE001 - whatever one frame's bytes do, it is that frame's
        reason = f"cannot decode: {type(error).__name__}: {error}"
    logger.warning("frame %s failed: %s", frame.relative, reason)
    return FileRead(facts, error=reason)


class _ReadFailed(Exception):
    """A refusal after the file's facts were learned: they belong in the frame's row."""

    def __init__(self, facts: FileFacts, reason: str) -> None:
        super().__init__(reason)
        self.facts, self.reason = facts, reason


def read_frame(frame: Claimed, bounds: FrameBounds, room: Room | None = None) -> tuple[memoryview, FileFacts]:
    """The frame's bytes (in `room` when they fit there), refused from its size and header before
    the rest is read."""
    info = frame.work_path.lstat()
    facts = FileFacts(size_bytes=info.st_size, file_mtime=datetime.fromtimestamp(info.st_mtime, UTC))
    try:
        if not stat.S_ISREG(info.st_mode):
            raise UndecodableImage("not a regular file (symlink or special file); never opened")
        data = _read_regular_file(frame, info.st_size, bounds, room)
    except UndecodableImage as error:
        raise _ReadFailed(facts, str(error)) from None
    except OSError as error:
        raise _ReadFailed(facts, f"cannot read: {error.strerror or error}") from None
    if info.st_size < len(data) <= bounds.max_file_bytes:
        # Its writer is still at it: what was read is a prefix of no size the file ever settled at
        # (its sha256 that of no file), and what it would be classified on may not be its picture.
        raise _ReadFailed(facts, f"still being written: it grew past {info.st_size} bytes while being read")
    facts = replace(facts, size_bytes=len(data))
    if len(data) > bounds.max_file_bytes:
        raise _ReadFailed(facts, f"too large: over {bounds.max_file_bytes} bytes (inbox.max_file_bytes)")
    return data, facts


def _read_regular_file(frame: Claimed, size: int, bounds: FrameBounds, room: Room | None) -> memoryview:
    # O_NOFOLLOW | O_NONBLOCK: a file swapped for a link or a FIFO since lstat is never followed
    # or waited on.
    descriptor = os.open(frame.work_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with open(descriptor, "rb", buffering=0) as handle:  # closes the descriptor
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UndecodableImage("not a regular file (symlink or special file); never opened")
        check_before_reading(
            os.pread(descriptor, HEADER_BYTES, 0),
            size,
            max_pixels=bounds.max_pixels,
            max_file_bytes=bounds.max_file_bytes,
        )
        # One allocation, filled by one read with the GIL released: joining the header to the
        # rest would copy every frame under the GIL. At most one byte more than allowed: a file
        # still growing is refused, not slurped.
        wanted = min(size, bounds.max_file_bytes) + 1
        if room is None or room.end - room.start < wanted:
            # Into writable memory (bytes are read-only): the model's preprocessing on a CPU
            # resizes a BMP's pixels right where they are (see ClipFeatureExtractor).
            into = page_aligned_memory(wanted)
        else:
            into = room.buffer[room.start : room.start + wanted]
        return into[: handle.readinto(into)]


def page_aligned_memory(size: int) -> memoryview:
    """`size` writable bytes starting on a page boundary. A block this large that malloc maps on
    its own (over its mmap threshold, 128 KiB at first, rising as such blocks are freed, at most
    32 MiB) starts 16 bytes past a page, and on AMD Zen 3 the kernel's copy of a file into memory
    starting 1 to 31 bytes past a page runs several times slower: a 4000x3000 frame read alone in
    19.7 ms instead of 7.5 (bench/read_offsets.py measures it on the host at hand)."""
    block = np.empty(size + _PAGE, dtype=np.uint8)
    skip = -block.ctypes.data % _PAGE
    return block[skip : skip + size].data
