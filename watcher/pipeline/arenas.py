"""Shared buffers that frames are read into by the file workers and copied to the model from.

A batch leases one buffer (an arena) from the pool for its reading, and until its frames are on
the model's device: the workers read each frame's file straight into it, and its pixel rows go
from there to the device (see model.packed). Pinned on CUDA, so those copies run asynchronously.
On a GPU there are fewer arenas than batches in flight: a batch gives its arena back as soon as
its pixels are on the device, before the model runs, its rows are committed and its files moved.
On a CPU a batch holds its arena until the model has its pixels.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.shared_memory import SharedMemory

import torch

from model.packed import pin_host_memory, unpin_host_memory

# Room a frame gets in an arena: a 640x480 24-bit BMP is 900 KiB. Larger frames share what
# smaller ones leave, and what finds no room travels through the worker's pipe instead (slower).
ARENA_BYTES_PER_FRAME = 1024 * 1024
# Arenas with the model on a GPU, whatever the lanes: a batch holds one only while its frames
# are read and copied to the device, a fraction of its way through (see BatchProcessor).
GPU_ARENAS = 2
# Where Linux keeps POSIX shared memory.
SHARED_MEMORY = "/dev/shm"


class Arena:
    def __init__(self, size: int, device: torch.device) -> None:
        self._memory = SharedMemory(create=True, size=size)
        self.name = self._memory.name
        self.size = size
        self.tensor = torch.frombuffer(self._memory.buf, dtype=torch.uint8)
        self._device = device
        self._pinned = pin_host_memory(self.tensor, device)

    def close(self) -> None:
        """Unmap and remove it. Only once no batch can touch it: torch.frombuffer holds no lock on
        the mapping, so a view used after this would fault (BatchProcessor.close runs after the
        batch threads have ended)."""
        if self._pinned:
            unpin_host_memory(self.tensor, self._device)
        del self.tensor
        self._memory.close()
        self._memory.unlink()


class ArenasUnavailable(RuntimeError):
    """Shared memory cannot hold the arenas (a small /dev/shm, as containers often have)."""


class ArenaPool:
    def __init__(self, *, count: int, size: int, device: torch.device) -> None:
        # Shared memory is a tmpfs: an arena larger than what is free there is created anyway and
        # dies of SIGBUS when a worker writes past the free space. Refused up front instead.
        free = _shared_memory_free()
        if free is not None and free < count * size:
            raise ArenasUnavailable(
                f"{count} frame buffers of {size // 2**20} MiB need {count * size // 2**20} MiB of shared "
                f"memory, {SHARED_MEMORY} has {free // 2**20} MiB free"
            )
        self._arenas = [Arena(size, device) for _ in range(count)]
        self._free: queue.Queue[Arena] = queue.Queue()
        for arena in self._arenas:
            self._free.put(arena)

    @contextmanager
    def lease(self) -> Iterator[Arena]:
        """An arena for one batch, waiting for one to be given back if none is free."""
        arena = self._free.get()
        try:
            yield arena
        finally:
            self._free.put(arena)

    def close(self) -> None:
        for arena in self._arenas:
            arena.close()


def _shared_memory_free() -> int | None:
    try:
        stats = os.statvfs(SHARED_MEMORY)
    except OSError:
        return None  # elsewhere than Linux: nothing to check
    return stats.f_bavail * stats.f_frsize
