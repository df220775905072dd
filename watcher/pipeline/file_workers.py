"""File work on processes of its own, so it uses every core (`batch.file_processes`).

On a GPU the file handling, not the model, is the limit, and in one process it is serialised by
the GIL. A batch's reading (straight into its arena, see watcher.pipeline.arenas) and its moves
are shared out between worker processes, each taking a contiguous share of the frames (and of the
arena); the daemon's own threads only coordinate, run the model and commit. The workers are
started with `spawn` (never forked from a process holding CUDA and threads), die with the daemon
and ignore the stop signals that the daemon handles.

A worker that dies (a decoder crashing on a frame's bytes) breaks the pool: the daemon stops as it
would have if that crash had been in its own process, and its next start treats the frames left
in progress as suspects (see watcher.intake.suspects).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for_all
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath
from typing import TypeVar

from model.packed import PackedBmp
from watcher.pipeline import file_work
from watcher.pipeline.arenas import Arena
from watcher.pipeline.decoding import FileRead
from watcher.pipeline.file_work import ClaimOutcome, Move
from watcher.pipeline.stages import Claimed, Decoded, FrameBounds

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Fewer frames than this a share cost more in handing out than they gain from another core.
MIN_FRAMES_A_SHARE = 4
_DIED = "a file worker process died: stopping (its frames are recovered at start)"


class FileWorkersFailed(RuntimeError):
    """A file worker process died: the daemon cannot go on safely and stops."""


class FileWorkers:
    def __init__(self, count: int, bounds: FrameBounds) -> None:
        self.count = count
        self._bounds = bounds
        self._pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=file_work.start_worker,
            initargs=(os.getpid(),),
        )
        # Every worker started now, from this thread: the pool would otherwise start them on
        # demand from whichever batch thread submits, and a worker dies with the thread that
        # started it (PR_SET_PDEATHSIG follows the thread), at the latest when a batch thread ends.
        _results([self._submit(os.getpid) for _ in range(count)])
        logger.debug("%d file worker processes started", count)

    @property
    def pids(self) -> set[int]:
        """The workers' process ids (for monitoring)."""
        return set(self._pool._processes or {})  # noqa: SLF001 - the executor keeps no public list

    def read(self, frames: list[Claimed], *, refused: dict[str, str], arena: Arena) -> list[Decoded]:
        """Every frame read, hashed and decoded into `arena`, its claim made durable."""
        shares = _shares(frames, self.count)
        room = arena.size // max(len(shares), 1)
        futures = [
            self._submit(
                file_work.read_share,
                [(frame, refused.get(frame.key)) for frame in share],
                self._bounds,
                arena.name,
                number * room,
                (number + 1) * room,
            )
            for number, share in enumerate(shares)
        ]
        reads: list[FileRead] = [read for share in _results(futures) for read in share]
        return [_decoded(frame, read, arena) for frame, read in zip(frames, reads, strict=True)]

    def claim(
        self,
        names: list[tuple[PurePosixPath, tuple[int, int] | None]],
        *,
        inbox: Path,
        area: Path,
        settle_s: float,
        timeout_s: float,
    ) -> list[ClaimOutcome]:
        """The names shared out to be claimed where ready (see file_work.claim_share), in order."""
        futures = [
            self._submit(file_work.claim_share, inbox, area, share, settle_s=settle_s, timeout_s=timeout_s)
            for share in _shares(names, self.count)
        ]
        return [outcome for share in _results(futures) for outcome in share]

    def move(self, moves: list[Move]) -> dict[str, str]:
        """Each share of the moves on a worker (see file_work.move_all); frames relocated, by key."""
        futures = [self._submit(file_work.move_all, share) for share in _shares(moves, self.count)]
        relocated: dict[str, str] = {}
        for share in _results(futures):
            relocated.update(share)
        return relocated

    def _submit(self, work: Callable[..., _T], *args: object, **kwargs: object) -> Future[_T]:
        try:
            return self._pool.submit(work, *args, **kwargs)
        except BrokenProcessPool:
            raise FileWorkersFailed(_DIED) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _decoded(frame: Claimed, read: FileRead, arena: Arena) -> Decoded:
    pixels = PackedBmp(arena.tensor, read.block) if read.block is not None else read.pixels
    return Decoded(frame, read.facts, pixels, read.error)


def _shares(items: Sequence[_T], workers: int) -> list[list[_T]]:
    """Contiguous shares, one a worker at most, none smaller than MIN_FRAMES_A_SHARE if avoidable."""
    if not items:
        return []
    count = max(1, min(workers, len(items) // MIN_FRAMES_A_SHARE))
    size = -(-len(items) // count)
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def _results(futures: list[Future[_T]]) -> list[_T]:
    """Every share's result, in order; raises only once every share has ended, so no worker is
    still at a batch's frames (or its arena) when the batch gives up on them."""
    wait_for_all(futures)
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool:
        raise FileWorkersFailed(_DIED) from None
