"""Shared buffers that frames are read into by the file workers and copied to the model from.

A batch leases one buffer (an arena) from the pool for its reading, and until its frames are on
the model's device: the workers read each frame's file straight into it, and its pixel rows go
from there to the device (see model.packed). Pinned on CUDA, so those copies run asynchronously.
On a GPU there are fewer arenas than batches in flight: a batch gives its arena back as soon as
its pixels are on the device, before the model runs, its rows are committed and its files moved.
On a CPU a batch holds its arena until the model has its pixels.

The arenas start with room for frames of 640x480 and grow for larger ones: a frame that finds no
room travels through its worker's pipe instead, a few hundred kilobytes a system call, each of
which gives the GIL back and waits to take it again beside the daemon's busy threads (1920x1080
frames, 6 MB each: the daemon's own CPU 9.9 ms a frame that way, 0.5 ms read into an arena;
`bench/daemon_cpu.py --width 1920 --height 1080`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import torch

from model.packed import pin_host_memory, unpin_host_memory
from watcher.pipeline.file_work import SHARED_MEMORY

logger = logging.getLogger(__name__)

# Room a frame gets in an arena at first: a 640x480 24-bit BMP is 900 KiB. Larger frames share
# what smaller ones leave, and the arenas grow when full batches need more (ArenaPool.fit).
ARENA_BYTES_PER_FRAME = 1024 * 1024
# How far they grow: a 3840x2160 24-bit BMP is 24 MiB; and all of them together (pinned on a
# GPU: host memory that cannot be swapped), so that a camera of huge frames costs speed, not
# the host's memory. Frames beyond that travel through the pipes, as before.
MAX_BYTES_PER_FRAME = 32 * 1024 * 1024
MAX_ARENAS_BYTES = 4 * 1024 * 1024 * 1024
# A full batch asks for room for this share of its frames: one odd frame never makes them grow.
FITTED_SHARE = 0.9
# Slack a frame's room has beyond its file's bytes: the read's one byte more (a file still
# growing is refused, not slurped) and the 64-byte alignment of the next frame's start.
_ROOM_SLACK = 128
# A plain BMP's headers: 14 + at most 124 bytes, and what a writer may put between them and the
# rows (an embedded colour profile is a few KB).
_HEADERS_AT_MOST = 16 * 1024
# Arenas with the model on a GPU, whatever the lanes: a batch holds one only while its frames
# are read and copied to the device, a fraction of its way through (see BatchProcessor).
GPU_ARENAS = 2


class Arena:
    def __init__(self, size: int, device: torch.device) -> None:
        self._memory = SharedMemory(create=True, size=size)
        self.name = self._memory.name
        try:
            _reserve(self.name, size)
        except OSError as error:
            self._memory.close()
            self._memory.unlink()
            raise ArenasUnavailable(
                f"a frame buffer of {size // 2**20} MiB: {SHARED_MEMORY} cannot hold it ({error.strerror})"
            ) from None
        self.size = size
        self.tensor = torch.frombuffer(self._memory.buf, dtype=torch.uint8)
        self._device = device
        self._pinned = pin_host_memory(self.tensor, device)
        self._retired = False

    def close(self) -> None:
        """Unmap and remove it. Only once no batch can touch it: torch.frombuffer holds no lock on
        the mapping, so a view used after this would fault (BatchProcessor.close runs after the
        batch threads have ended)."""
        self.retire()
        self.unmap()

    def retire(self) -> None:
        """Unpinned and its name removed: no worker can attach to it again, and its memory goes
        once every mapping of it has (see unmap)."""
        if self._pinned:
            unpin_host_memory(self.tensor, self._device)
            self._pinned = False
        if not self._retired:
            self._retired = True
            self._memory.unlink()

    def unmap(self) -> bool:
        """Its memory unmapped here; False while a view of it still lives (a finished batch's
        frames not yet collected, say): then later."""
        self.tensor = torch.empty(0, dtype=torch.uint8)  # the view of the whole mapping let go
        try:
            self._memory.close()
        except BufferError:
            return False
        return True


class ArenasUnavailable(RuntimeError):
    """Shared memory cannot hold the arenas (a small /dev/shm, as containers often have)."""


class ArenaPool:
    """`count` arenas of room for `frames` frames each, leased one a batch."""

    def __init__(self, *, count: int, frames: int, device: torch.device) -> None:
        self._frames, self._device = frames, device
        self._room = ARENA_BYTES_PER_FRAME  # a frame's, in the arenas made from now on
        _require_room(count * frames * self._room, what=f"{count} frame buffers of {frames} MiB")
        self._arenas: list[Arena] = []
        try:
            for _ in range(count):
                self._arenas.append(Arena(frames * self._room, device))
        except ArenasUnavailable:  # taken meanwhile: those made are not left in shared memory
            for arena in self._arenas:
                arena.close()
            raise
        self._free: queue.Queue[Arena] = queue.Queue()
        for arena in self._arenas:
            self._free.put(arena)
        self._retired: list[Arena] = []  # replaced, still mapped by a view somewhere
        self._grown_as_asked = True  # False once shared memory refused to grow them
        self._replacing = threading.Lock()  # batch threads lease side by side

    @contextmanager
    def lease(self) -> Iterator[Arena]:
        """An arena for one batch, waiting for one to be given back if none is free."""
        arena = self._free.get()
        if arena.size < self._frames * self._room:
            with self._replacing:
                arena = self._replaced(arena)
        try:
            yield arena
        finally:
            self._free.put(arena)

    def fit(self, frame_sizes: list[int]) -> None:
        """Grow the arenas (as each is next leased) when a full batch's frames, of these sizes in
        bytes, did not find room enough: room for FITTED_SHARE of them, within the limits."""
        if len(frame_sizes) < self._frames or not self._grown_as_asked:
            return  # a batch flushed by time is small, and waits little: no measure of the site
        fitted = sorted(frame_sizes)[int(FITTED_SHARE * (len(frame_sizes) - 1))] + _ROOM_SLACK
        within = min(MAX_BYTES_PER_FRAME, MAX_ARENAS_BYTES // (len(self._arenas) * self._frames))
        room = min(-(-fitted // 4096), within // 4096) * 4096  # whole pages, as FileWorkers.read needs
        with self._replacing:  # batches side by side ask once
            if room <= self._room:
                return
            logger.info(
                "frame buffers grow to %.1f MiB a frame (was %.1f): frames of %d bytes",
                room / 2**20,
                self._room / 2**20,
                fitted - _ROOM_SLACK,
            )
            self._room = room

    def _replaced(self, arena: Arena) -> Arena:
        size = self._frames * self._room
        try:
            _require_room(size, what=f"a frame buffer of {size // 2**20} MiB")
            grown = Arena(size, self._device)
        except (ArenasUnavailable, OSError) as error:
            logger.warning("frame buffers stay as they are (larger frames go through pipes): %s", error)
            self._grown_as_asked = False
            self._room = arena.size // self._frames
            return arena
        self._arenas[self._arenas.index(arena)] = grown
        arena.retire()
        self._retired = [old for old in [*self._retired, arena] if not old.unmap()]
        return grown

    def close(self) -> None:
        for arena in [*self._arenas, *self._retired]:
            arena.close()


def served_in_place(size_bytes: int, width: int, height: int) -> bool:
    """Whether a frame of this file size and these sides is, by its size, a plain 24-bit BMP: the
    kind whose rows stay in an arena. Others (8- or 32-bit, compressed) are decoded by Pillow and
    come back through the pipe whatever the room, so they never ask the arenas to grow."""
    rows = (width * 3 + 3) // 4 * 4 * height
    return rows <= size_bytes <= rows + _HEADERS_AT_MOST


def _require_room(size: int, *, what: str) -> None:
    # Shared memory is a tmpfs: an arena larger than what is free there is created anyway and
    # dies of SIGBUS when a worker writes past the free space. Refused up front instead.
    free = _shared_memory_free()
    if free is not None and free < size:
        raise ArenasUnavailable(
            f"{what}: {size // 2**20} MiB of shared memory wanted, {SHARED_MEMORY} has "
            f"{free // 2**20} MiB free"
        )


def _reserve(name: str, size: int) -> None:
    # A tmpfs takes a page only when it is first written: an arena that the free space held when
    # it was made may find none left when a worker reads a frame into it (another one grown
    # meanwhile, a replaced one still mapped), and that read comes back short, a good frame
    # failed as truncated (pinning one faults the daemon). Every page taken now instead: an arena
    # that shared memory cannot hold is refused when it is made.
    if not hasattr(os, "posix_fallocate") or not Path(SHARED_MEMORY).is_dir():
        return  # elsewhere than Linux: nothing to reserve
    descriptor = os.open(Path(SHARED_MEMORY) / name, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    finally:
        os.close(descriptor)


def _shared_memory_free() -> int | None:
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError:
        return None  # elsewhere than Linux: nothing to check
    return stats.f_bavail * stats.f_frsize
