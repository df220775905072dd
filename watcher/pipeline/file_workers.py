"""File work on processes of its own, so it uses every core (`batch.file_processes`).

On a GPU the file handling, not the model, is the limit, and in one process it is serialised by
the GIL. A batch's reading (straight into its arena, see watcher.pipeline.arenas) and its moves
are shared out between worker processes, each taking a contiguous share of the frames (and of the
arena); the daemon's own threads only coordinate, run the model and commit. The workers are
started with `spawn` (never forked from a process holding CUDA and threads), die with the daemon
and ignore the stop signals that the daemon handles.

Each worker has a pipe of its own, and the thread that hands it a share (a batch thread, or the
loop for claims) writes the share to it and reads the answer from it itself: no feeder or result
thread in between (a process pool's), whose every hand-off waits for the GIL behind the daemon's
busy threads, up to a switch interval each, while the batch waits (bench/daemon_cpu.py
--stand-in-gpu measures the read stage). Idle workers wait in one queue; a caller takes one per
share, or reuses one of its own as it answers, so callers side by side never wait on each other's
workers.

A worker that dies (a decoder crashing on a frame's bytes) breaks the pool: the daemon stops as it
would have if that crash had been in its own process, and its next start treats the frames left
in progress as suspects (see watcher.intake.suspects).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_answers
from multiprocessing.process import BaseProcess
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

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
# How long a worker has to end once asked to (or it is killed): its share is done by then.
_STOP_S = 10.0
_DIED = "a file worker process died: stopping (its frames are recovered at start)"


class FileWorkersFailed(RuntimeError):
    """A file worker process died: the daemon cannot go on safely and stops."""


class _Worker:
    """One worker process and the daemon's end of its pipe."""

    def __init__(self, context: Any, daemon_pid: int, number: int) -> None:
        self.connection, theirs = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=file_work.serve, args=(theirs, daemon_pid), name=f"file-worker-{number}", daemon=True
        )
        self.process.start()
        theirs.close()  # the worker's end lives in the worker: its death is then our EOF


class FileWorkers:
    def __init__(self, count: int, bounds: FrameBounds) -> None:
        self.count = count
        self._bounds = bounds
        context = multiprocessing.get_context("spawn")
        # Every worker started now, from this thread: a worker dies with the thread that started
        # it (PR_SET_PDEATHSIG follows the thread), and batch threads end.
        self._workers = [_Worker(context, os.getpid(), number) for number in range(count)]
        # Idle workers; None once one has died (every caller that takes it puts it back and fails).
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._run([functools.partial(os.getpid)] * count)  # each one up and answering
        logger.debug("%d file worker processes started", count)

    @property
    def pids(self) -> set[int]:
        """The workers' process ids (for monitoring)."""
        return {worker.process.pid for worker in self._workers if worker.process.pid is not None}

    def read(self, frames: list[Claimed], *, refused: dict[str, str], arena: Arena) -> list[Decoded]:
        """Every frame read, hashed and decoded into `arena`, its claim made durable."""
        shares = _shares(frames, self.count)
        room = arena.size // max(len(shares), 1)
        jobs = [
            functools.partial(
                file_work.read_share,
                [(frame, refused.get(frame.key)) for frame in share],
                self._bounds,
                arena.name,
                number * room,
                (number + 1) * room,
            )
            for number, share in enumerate(shares)
        ]
        reads: list[FileRead] = [read for share in self._run(jobs) for read in share]
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
        jobs = [
            functools.partial(
                file_work.claim_share, inbox, area, share, settle_s=settle_s, timeout_s=timeout_s
            )
            for share in _shares(names, self.count)
        ]
        return [outcome for share in self._run(jobs) for outcome in share]

    def move(self, moves: list[Move]) -> dict[str, str]:
        """Each share of the moves on a worker (see file_work.move_all); frames relocated, by key."""
        relocated: dict[str, str] = {}
        for share in self._run(
            [functools.partial(file_work.move_all, share) for share in _shares(moves, self.count)]
        ):
            relocated.update(share)
        return relocated

    def _run(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Each job (a function of file_work with its arguments) on a worker; their results in
        order. A job's exception is raised here, and a worker's death as FileWorkersFailed, only
        once every job handed out has ended: no worker is still at a batch's frames (or its arena)
        when the batch gives up on them."""
        results: list[Any] = [None] * len(jobs)
        failure: BaseException | None = None
        busy: dict[Connection, tuple[_Worker, int]] = {}  # ours, at a job: by their pipe
        pending = list(enumerate(jobs))
        while pending or busy:
            if pending and failure is None:
                try:
                    worker = self._free_worker(waiting=not busy)
                except FileWorkersFailed as broken:
                    failure = broken
                    continue
                if worker is not None:
                    number, job = pending.pop(0)
                    try:
                        worker.connection.send(job)
                    except OSError:  # its pipe is closed: it died
                        failure = self._broke()
                        continue
                    busy[worker.connection] = (worker, number)
                    continue
            if not busy:
                break  # the rest is not handed out: a job failed
            for connection in wait_for_answers(list(busy)):
                answered, number = busy.pop(connection)  # type: ignore[call-overload]
                try:
                    succeeded, value = answered.connection.recv()
                except (EOFError, OSError):
                    failure = failure or self._broke()
                    continue
                self._idle.put(answered)
                if succeeded:
                    results[number] = value
                else:
                    failure = failure or value
        if failure is not None:
            raise failure
        return results

    def _free_worker(self, *, waiting: bool) -> _Worker | None:
        """An idle worker, waiting for one if `waiting`; otherwise None when there is none (the
        caller has jobs of its own in flight, and reuses those workers as they answer, never
        waiting on another caller's). FileWorkersFailed once a worker has died."""
        try:
            worker = self._idle.get(block=waiting)
        except queue.Empty:
            return None
        if worker is None:
            self._idle.put(None)  # for every other caller, waiting or not
            raise FileWorkersFailed(_DIED)
        return worker

    def _broke(self) -> FileWorkersFailed:
        """A worker died: every caller from now on, including those waiting for a worker, fails."""
        self._idle.put(None)
        return FileWorkersFailed(_DIED)

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.connection.send(None)  # done: the worker ends
            except OSError:
                pass  # already gone
        for worker in self._workers:
            worker.process.join(_STOP_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()


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
