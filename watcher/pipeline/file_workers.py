"""File work on processes of its own, so it uses every core (`batch.file_processes`).

On a GPU the file handling, not the model, is the limit, and in one process it is serialised by
the GIL. A batch's reading (straight into its arena, see watcher.pipeline.arenas) and its moves
are shared out between worker processes, each taking a contiguous share of the frames (and of the
arena); the daemon's own threads only coordinate, run the model and commit. The workers are
started with `spawn` (never forked from a process holding CUDA and threads), die with the daemon
and ignore the stop and reload signals that the daemon handles.

Each worker has a pipe of its own, and the thread that hands it a share (a batch thread, or the
loop for claims) writes the share to it and reads the answer from it itself: no feeder or result
thread in between (a process pool's), whose every hand-off waits for the GIL behind the daemon's
busy threads, up to a switch interval each, while the batch waits (bench/daemon_cpu.py
--stand-in-gpu measures the read stage). Idle workers wait in one queue; a caller takes one a
share, or reuses one of its own as it answers: callers side by side never wait on each other's.

A worker that dies (a decoder crashing on a frame's bytes) breaks the pool: the daemon stops as it
would have if that crash had been in its own process, and its next start treats the frames left
in progress as suspects (see watcher.intake.suspects).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.util
import os
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_answers
from multiprocessing.reduction import ForkingPickler
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from model.packed import PackedBmp
from watcher.pipeline import file_work
from watcher.pipeline.arenas import Arena
from watcher.pipeline.decoding import FileRead
from watcher.pipeline.file_work import ClaimOutcome, Move
from watcher.pipeline.gil_held_pipes import ready, receive_message, send_message
from watcher.pipeline.stages import Claimed, Decoded, FrameBounds
from watcher.pipeline.worker_processes import START_S, StartWait, WorkerProcess, kill_all, stop_all

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Fewer frames than this a share cost more in handing out than they gain from another core.
MIN_FRAMES_A_SHARE = 4
_DIED = "a file worker process died: stopping (its frames are recovered at start)"


class FileWorkersFailed(RuntimeError):
    """A file worker process died: the daemon cannot go on safely and stops."""


class FileWorkers:
    def __init__(self, count: int, bounds: FrameBounds, *, start_s: float = START_S) -> None:
        """Raises StartupError if a worker has not answered within `start_s`, StartupStopped if a
        stop signal comes first (see watcher.pipeline.worker_processes), FileWorkersFailed if one
        dies: every worker ended."""
        self.count = count
        self._bounds = bounds
        self._workers: list[WorkerProcess] = []
        # Idle workers; None once the pool is broken (every caller that takes it puts it back).
        self._idle: queue.SimpleQueue[WorkerProcess | None] = queue.SimpleQueue()
        self._broken = False
        # Run by close(), or at exit if close() never is (start-up failing after this): before
        # multiprocessing's own exit handler, which would SIGTERM the workers (they ignore it)
        # and wait for them forever.
        self._stopping = multiprocessing.util.Finalize(self, stop_all, args=(self._workers,), exitpriority=10)
        context = multiprocessing.get_context("spawn")
        try:
            # Every worker started now, from this thread: a worker dies with the thread that
            # started it (PR_SET_PDEATHSIG follows the thread), and batch threads end.
            for number in range(count):
                self._workers.append(WorkerProcess(context, os.getpid(), number))
                self._idle.put(self._workers[-1])
            # Each one up and answering, or a stop heard meanwhile.
            self._run([functools.partial(os.getpid)] * count, starting=StartWait(start_s))
        except BaseException:
            kill_all(self._workers)  # at once: none holds anything yet, and one may hang
            self.close()
            raise
        logger.debug("%d file worker processes started", count)

    @property
    def pids(self) -> set[int]:
        """The workers' process ids (for monitoring)."""
        return {worker.pid for worker in self._workers if worker.pid is not None}

    def read(self, frames: list[Claimed], *, refused: dict[str, str], arena: Arena) -> list[Decoded]:
        """Every frame read, hashed and decoded into `arena` (a share's room in it in proportion to
        its frames: shares of 9 and 8 frames alike fit an arena sized for 128; file_work.share_rooms)."""
        shares = _shares(frames, self.count)
        rooms = file_work.share_rooms(arena.size, [len(share) for share in shares])
        jobs = [
            functools.partial(
                file_work.read_share,
                [(frame, refused.get(frame.key)) for frame in share],
                self._bounds,
                arena.name,
                start,
                end,
            )
            for share, (start, end) in zip(shares, rooms, strict=True)
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
        # The names cross as text (a path pickles part by part), and come back as the same objects.
        jobs = [
            functools.partial(
                file_work.claim_share,
                inbox,
                area,
                [(str(relative), finished) for relative, finished in share],
                settle_s=settle_s,
                timeout_s=timeout_s,
            )
            for share in _shares(names, self.count)
        ]
        answers = [answer for share in self._run(jobs) for answer in share]
        return [
            file_work.claim_outcome(relative, answer)
            for (relative, _), answer in zip(names, answers, strict=True)
        ]

    def move(self, moves: list[Move]) -> dict[str, str]:
        """Each share of the moves on a worker (see file_work.move_all); frames relocated, by key."""
        relocated: dict[str, str] = {}
        for share in self._run(
            [functools.partial(file_work.move_all, share) for share in _shares(moves, self.count)]
        ):
            relocated.update(share)
        return relocated

    def _run(self, jobs: Sequence[Callable[[], Any]], *, starting: StartWait | None = None) -> list[Any]:
        """Each job (a function of file_work with its arguments) on a worker; their results in
        order. A job's exception is raised here, and a worker's death as FileWorkersFailed (which
        outranks it), only once every job handed out has ended: no worker is still at a batch's
        frames (or its arena) when the batch gives up on them."""
        results: list[Any] = [None] * len(jobs)
        calls = _Calls(list(enumerate(jobs)))
        try:
            while calls.pending or calls.busy:
                if calls.pending and calls.failure is None and not calls.died:
                    if self._hand_out(calls):
                        continue
                if not calls.busy:
                    break  # the rest is not handed out: a job failed
                for connection in _answered(calls.busy, starting):
                    self._take_answer(calls, connection, results)
        finally:
            if calls.busy or calls.died:
                # A death, or leaving with answers unread (those workers cannot serve another
                # caller): the pool is broken, for every caller from now on.
                self._break()
        if calls.died:
            raise FileWorkersFailed(_DIED) from calls.failure
        if calls.failure is not None:
            raise calls.failure
        return results

    def _hand_out(self, calls: _Calls) -> bool:
        """The next pending job sent to a free worker; False if none is free and some of this
        caller's are busy (it then takes the next free one from its own, never waiting on
        another caller's)."""
        if self._broken:
            calls.died = True
            return True
        try:
            worker = self._idle.get(block=not calls.busy)
        except queue.Empty:
            return False
        if worker is None:  # broken meanwhile
            self._idle.put(None)  # for every other caller, waiting or not
            calls.died = True
            return True
        number, job = calls.pending.pop(0)
        try:
            message = ForkingPickler.dumps(job)
        except Exception as error:  # noqa: BLE001 - the job would not pickle: nothing was sent
            self._idle.put(worker)
            calls.failure = error
            return True
        try:
            send_message(worker.connection.fileno(), message)
        except OSError:  # its pipe is closed: it died
            calls.died = True
            return True
        calls.busy[worker.connection] = (worker, number)
        return True

    def _take_answer(self, calls: _Calls, connection: Connection, results: list[Any]) -> None:
        worker, number = calls.busy.pop(connection)
        try:
            message = receive_message(connection.fileno())
        except (EOFError, OSError):
            calls.died = True  # the pipe closed: the worker died
            return
        except Exception as error:  # noqa: BLE001 - told as the worker's loss
            # Out of memory halfway through, say: what is left of the answer is still in the
            # pipe, and the worker cannot serve again. As if it had died.
            calls.died = True
            calls.failure = calls.failure or error
            return
        self._idle.put(worker)  # its answer read whole: free for the next job
        try:
            succeeded, value = ForkingPickler.loads(message)
        except Exception as error:  # noqa: BLE001 - read whole, but cannot be rebuilt here
            succeeded, value = False, RuntimeError(f"a file worker's answer cannot be read: {error!r}")
        if succeeded:
            results[number] = value
        elif calls.failure is None:
            calls.failure = value

    def _break(self) -> None:
        self._broken = True
        self._idle.put(None)  # wakes a caller waiting for a free worker

    def close(self) -> None:
        """End the workers; any call from now on fails. Only once no call is under way (the
        daemon closes them after its batch threads and its loop have ended)."""
        self._break()
        self._stopping()


@dataclass
class _Calls:
    """One caller's jobs: those not handed out yet (by their place), those at a worker (by its
    pipe), the first job's exception, whether a worker died."""

    pending: list[tuple[int, Callable[[], Any]]]
    busy: dict[Connection, tuple[WorkerProcess, int]] = field(default_factory=dict)
    failure: BaseException | None = None
    died: bool = False


def _answered(
    busy: dict[Connection, tuple[WorkerProcess, int]], starting: StartWait | None
) -> list[Connection]:
    """The busy workers' pipes that hold an answer (or were closed by a death): those ready now,
    without giving the GIL back, else the first to be, waiting (see watcher.pipeline.gil_held_pipes);
    while `starting`, none after a look, or it raises."""
    by_fd = {connection.fileno(): connection for connection in busy}
    now = ready(list(by_fd))
    if now:
        return [by_fd[fd] for fd in now]
    if starting is None:
        return wait_for_answers(list(busy))  # type: ignore[return-value]
    answered = wait_for_answers(list(busy), timeout=starting.look_s())
    if not answered:
        starting.go_on(worker.pid for worker, _ in busy.values())
    return answered  # type: ignore[return-value]


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
