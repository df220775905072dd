"""A batch's file work, the same in the daemon's threads and in its file worker processes.

Claiming the waiting frames that are ready, reading them before the model (their claims made
durable beside it: sync_claims), moving them after the commit.
A worker process (see watcher.pipeline.file_workers) runs these functions on its share of a
batch; this module imports nothing heavy, so a worker never loads torch or the database.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import signal
import traceback
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path, PurePosixPath

from watcher import faults
from watcher.faults import kill_point
from watcher.frozen import frozen_when_checked
from watcher.intake.claimed import claimed_frame
from watcher.intake.claiming import ClaimRefused, claim, release
from watcher.intake.durability import fsync_dirs
from watcher.intake.held_folders import HeldFolders
from watcher.intake.placement import OutputFolderAway, move_frame
from watcher.intake.readiness import Look, Verdict, look
from watcher.intake.site_mounts import Identity
from watcher.intake.source_folders import SourceFolders
from watcher.pipeline.decoding import FileRead, Room, read_and_decode
from watcher.pipeline.stages import Claimed, FrameBounds
from watcher.service.signals import release_held

# Frames start on this boundary in a shared buffer: whole cache lines for the copies out of it.
ALIGNMENT = 64
_PR_SET_PDEATHSIG = 1
# Where Linux keeps POSIX shared memory (as watcher.pipeline.arenas, which imports torch: a
# worker never does).
SHARED_MEMORY = "/dev/shm"

# Shared buffers this worker has opened, by name: opened once, kept while the daemon keeps them.
_attached: dict[str, SharedMemory] = {}


@frozen_when_checked  # made for every frame (see watcher.frozen)
class Move:
    """A committed frame to move to where its row says (`stored`, the row's text: made a path by
    the process that moves it, not the daemon's loop), under `root`, the folder whose device and
    inode the batch's look saw (`identity`: the moves go there or nowhere)."""

    frame: Claimed
    stored: str
    root: Path
    sha256: str | None
    identity: Identity


@frozen_when_checked  # made for every frame (see watcher.frozen)
class ClaimOutcome:
    """What became of one waiting name: claimed (`frame`), refused (`refused`: why it stays in
    the inbox), or not taken (`verdict`, with what was seen of it for the readiness tracker)."""

    relative: PurePosixPath
    frame: Claimed | None = None
    verdict: Verdict | None = None
    looked: Look | None = None
    refused: str | None = None


# A claimed frame as it crosses back from a file process: its key, where it is now, when it was
# claimed and the inbox folder it left, as text; its inbox path is the name the daemon sent.
_CrossedFrame = tuple[str, str, datetime, str | None]
# A name's outcome as it crosses back, in the order the names went: the daemon pairs each answer
# with the name it sent (claim_outcome), so that neither the name nor the frame's path is
# parsed again there, nor the name's hash worked out again to take it off the waiting list.
ClaimAnswer = tuple[_CrossedFrame | None, Verdict | None, Look | None, str | None]


def claim_answer(outcome: ClaimOutcome) -> ClaimAnswer:
    frame = outcome.frame
    crossed = None
    if frame is not None:
        source_dir = str(frame.source_dir) if frame.source_dir is not None else None
        crossed = (frame.key, frame.work_path_text, frame.received_at, source_dir)
    return crossed, outcome.verdict, outcome.looked, outcome.refused


def claim_outcome(relative: PurePosixPath, answer: ClaimAnswer) -> ClaimOutcome:
    """The outcome for `relative` (the name as the daemon holds it) of its answer."""
    crossed, verdict, looked, refused = answer
    frame = None if crossed is None else claimed_frame(crossed[0], relative, *crossed[1:])
    return ClaimOutcome(relative, frame, verdict, looked, refused)


def start_worker(daemon_pid: int) -> None:
    """A file worker's first steps: die with the daemon, leave stopping to it."""
    faults.hang_worker_at_start()  # as its imports would on a dead share: the stops still held
    # A daemon SIGKILLed must not leave workers moving its frames while the next one recovers.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:
        os._exit(1)  # the daemon died before the line above
    # systemd's stop signals every process of the service: the daemon finishes the batch in hand,
    # and needs its workers for that.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the daemon's, never a worker's end
    release_held()  # blocked since it started (see FileWorkers): a stop meanwhile waited, and is dropped
    faults.serve_daemon(daemon_pid)
    faults.kill_worker_at_start()
    # A frame's warnings (why it failed) are logged where they happen: on the daemon's stderr,
    # which the worker shares (the journal, under systemd).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s (file worker): %(message)s")


def serve(connection: Connection, daemon_pid: int) -> None:
    """A file worker's life: each job the daemon sends down `connection` (a function of this
    module with its arguments) run, and its result sent back, or the exception it raised; None,
    or the daemon's end closed, ends it (see watcher.pipeline.file_workers)."""
    start_worker(daemon_pid)
    # Kept by no process a job might start: the worker's death must close the daemon's end.
    os.set_inheritable(connection.fileno(), False)
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return  # the daemon is gone
        if job is None:
            return
        try:
            answer: tuple[bool, object] = (True, job())
        except Exception as error:  # noqa: BLE001 - the daemon's to handle, as in its own threads
            _note_where(error)
            answer = (False, error)
        try:
            connection.send(answer)
        except Exception as unpicklable:  # noqa: BLE001 - what cannot cross: its text does
            connection.send((False, _crossable(answer[1], unpicklable)))


def _note_where(error: Exception) -> None:
    """The worker's traceback, as a note on its exception (the daemon's traceback ends at the pipe)."""
    try:
        error.add_note(f"in file worker {os.getpid()}:\n{traceback.format_exc().rstrip()}")
    except Exception:  # noqa: BLE001, S110 - an exception that takes no notes (frozen) goes without
        pass


def _crossable(value: object, why: Exception) -> Exception:
    """An answer that cannot be pickled, as an exception that can: an OSError keeps its errno
    (the daemon tells a full disk from a bad frame by it). Never fails itself."""
    try:
        text = f"{value} (not picklable: {why})"
    except Exception:  # noqa: BLE001 - even its text fails: its type names it
        text = f"{type(value).__qualname__} (not picklable)"
    if isinstance(value, OSError) and isinstance(value.errno, int):
        return OSError(value.errno, text)
    return RuntimeError(text)


def read_share(
    jobs: list[tuple[Claimed, str | None]], bounds: FrameBounds, buffer: str, start: int, end: int
) -> list[FileRead]:
    """Read, hash and decode frames into `buffer[start:end]` (the name of a shared buffer). Each
    job is a frame and the reason it is refused unopened, if any. Their claims are made durable by
    the daemon, once for the whole batch (see BatchProcessor)."""
    _let_go_of_retired()  # a look at each one kept: microseconds, against milliseconds of reading
    memory = _attached.get(buffer)
    if memory is None:
        memory = _attached[buffer] = SharedMemory(name=buffer)
    view = memory.buf
    assert view is not None, "an open SharedMemory has a buffer"
    cursor, reads = start, []
    for frame, refused in jobs:
        read = read_and_decode(frame, bounds, refused, Room(view, cursor, end))
        if read.block is not None:
            cursor = _aligned(read.block.offset + read.block.nbytes)
        reads.append(read)
    return reads


def share_rooms(size: int, shares: list[int]) -> list[tuple[int, int]]:
    """Where each share of a batch (its number of frames) is read in a buffer of `size` bytes, as
    (start, end): in proportion to its frames, each starting on ALIGNMENT (memory 1-31 bytes past a
    page is read into several times slower on AMD Zen 3: bench/read_offsets.py). An arena is whole
    pages (ArenaPool.fit): the last room ends at its end."""
    units, frames = size // ALIGNMENT, sum(shares)
    ends = [units * taken // frames * ALIGNMENT for taken in itertools.accumulate(shares)]
    return list(zip([0, *ends[:-1]], ends, strict=True))


def claim_share(
    inbox: Path,
    area: Path,
    names: list[tuple[str, tuple[int, int] | None]],
    *,
    settle_s: float,
    timeout_s: float,
) -> list[ClaimAnswer]:
    """Claim each waiting name (inbox-relative, as text) that a look shows ready (complete and
    idle for settle_s, or closed by its writer: each name comes with its writer's close mark, if
    any). A name a first look cannot call ready comes back with what was seen, for the daemon's
    readiness tracker, which remembers earlier looks. One answer a name, in order (claim_outcome)."""
    # A share's frames come a folder at a time: each folder is opened once for the share's claims.
    with SourceFolders(inbox) as folders:
        return [
            claim_answer(
                _claimed_if_ready(
                    inbox, area, PurePosixPath(name), finished, settle_s, timeout_s, folders=folders
                )
            )
            for name, finished in names
        ]


def _claimed_if_ready(
    inbox: Path,
    area: Path,
    relative: PurePosixPath,
    finished: tuple[int, int] | None,
    settle_s: float,
    timeout_s: float,
    *,
    folders: SourceFolders,
) -> ClaimOutcome:
    looked = look(inbox / relative)
    if isinstance(looked, Look):
        verdict = looked.verdict(settle_s=settle_s, timeout_s=timeout_s, finished=finished)
    else:
        verdict = looked
    if verdict not in (Verdict.READY, Verdict.TIMED_OUT, Verdict.SPECIAL):
        return ClaimOutcome(relative, verdict=verdict, looked=looked if isinstance(looked, Look) else None)
    try:
        frame = claim(inbox, area, relative, folders=folders)
    except ClaimRefused as error:
        return ClaimOutcome(relative, refused=str(error))
    if frame is None:
        return ClaimOutcome(relative, verdict=Verdict.GONE)
    kill_point("claimed")
    return ClaimOutcome(relative, frame=frame)


def sync_claims(frames: list[Claimed]) -> None:
    """The claims' directories flushed to disk: they must be there before the frames' rows are
    (a claim lost in a power cut after the commit would put a counted frame back in the inbox)."""
    fsync_dirs(
        directory for frame in frames for directory in frame.claim_dirs if directory != frame.source_dir
    )
    # The inbox folders they left are the operator's: one made unreadable since is not flushed
    # (the rename is in the area's flush too, one journal commit on ext4 or XFS), nor does it stop
    # the daemon.
    fsync_dirs((frame.source_dir for frame in frames if frame.source_dir is not None), operators=True)


def move_all(moves: list[Move]) -> dict[str, str]:
    """Move each frame, flush the new names to disk, then release the claims; returns the frames
    whose file went elsewhere than their row says (key → where). They go into the folders the
    batch's look saw, or stop: OutputFolderAway (see watcher.intake.held_folders)."""
    relocated: dict[str, str] = {}
    folders: set[Path] = set()
    with HeldFolders() as held:
        for move in moves:
            reach = held.reach(move.root, move.identity)
            if reach is None:
                raise OutputFolderAway(
                    errno.ENOENT, "output folder went away during the moves", str(move.root)
                )
            kill_point("placing")  # its folder looked at, nothing of this frame moved yet
            stored = Path(move.stored)
            final = move_frame(move.frame, stored, root=move.root, sha256=move.sha256, reach=reach)
            if final != stored:
                # Something took the reserved name between commit and move.
                relocated[move.frame.key] = str(final)
            folders.add(stored.parent)
            kill_point("moved")
        # The new names must be on disk before the in-progress copies' names disappear.
        held.fsync([*folders, *(Path(path).parent for path in relocated.values())])
    for move in moves:
        release(move.frame)
    return relocated


def _let_go_of_retired() -> None:
    """Unmap the shared buffers the daemon has removed (it grew them: see
    watcher.pipeline.arenas), so that their memory goes."""
    for name in [name for name in _attached if not (Path(SHARED_MEMORY) / name).exists()]:
        try:
            _attached.pop(name).close()
        except BufferError:  # a view of it still lives: unmapped when that goes
            pass


def _aligned(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT
