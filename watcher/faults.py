"""Named kill points in a frame's life, for the fault-injection tests.

Set `CCTV_GENDER_KILL_AT=<step>` (or `<step>:<n>`, the n-th time the step is reached) and the
process SIGKILLs itself there: no special build, nothing happens when the variable is unset.
Steps: claimed, decoded, inferred, committed, placing (a frame's output folder looked at, before
its move), linked (a frame's new name made, its old one not yet removed), moved.

`CCTV_GENDER_PAUSE_AT=<step>[:<n>]` with `CCTV_GENDER_PAUSE_FILE=<path>` pauses there instead:
the process creates the file and waits until it is removed (a test does meanwhile what it wants to
happen at that moment: a share unmounted in the middle of a batch's moves), at most
PAUSE_LIMIT_S.

`CCTV_GENDER_KILL_ON_FRAME=<file name>` makes a poison input of one frame: the process SIGKILLs
itself whenever it has read a frame of that name, on every run, as a frame that crashes a decoder
would (the crash-loop breaker's tests use it).

`CCTV_GENDER_KILL_AT` and `CCTV_GENDER_KILL_ON_FRAME` kill the whole daemon wherever they are
reached: in a file worker process (see watcher.pipeline.file_workers) the daemon is killed first,
then the worker. The n-th time counts every process of the daemon, through a counter file beside
the other temporary files.

Two kill a file worker process alone: `CCTV_GENDER_KILL_WORKER_ON_FRAME=<file name>` the one that
reads a frame of that name (a worker crash), `CCTV_GENDER_KILL_WORKER_AT_START=1` every one as it
starts, before it answers the daemon (a pool that cannot start).

`CCTV_GENDER_HANG_WORKER_AT_START=<seconds>` makes every file worker process sleep that long as it
starts, first thing, the stop signals still held: as one whose imports hang on a dead NFS share.
"""

from __future__ import annotations

import fcntl
import os
import signal
import tempfile
import time
from pathlib import Path, PurePosixPath

KILL_ENV = "CCTV_GENDER_KILL_AT"
POISON_ENV = "CCTV_GENDER_KILL_ON_FRAME"
# A file worker process (only) SIGKILLs itself on reading a frame of this name: a worker crash.
WORKER_CRASH_ENV = "CCTV_GENDER_KILL_WORKER_ON_FRAME"
# Each file worker process SIGKILLs itself as it starts: the pool fails before the daemon runs.
WORKER_START_CRASH_ENV = "CCTV_GENDER_KILL_WORKER_AT_START"
# Each file worker process sleeps this many seconds as it starts: a worker that hangs starting.
WORKER_START_HANG_ENV = "CCTV_GENDER_HANG_WORKER_AT_START"
PAUSE_ENV = "CCTV_GENDER_PAUSE_AT"
PAUSE_FILE_ENV = "CCTV_GENDER_PAUSE_FILE"
PAUSE_LIMIT_S = 60.0
STEPS = ("claimed", "decoded", "inferred", "committed", "placing", "linked", "moved")

# The daemon's process id, in a file worker; None in the daemon itself.
_owner: int | None = None


def serve_daemon(pid: int) -> None:
    """This process is a file worker of the daemon `pid`: a kill point kills that daemon too."""
    global _owner  # noqa: PLW0603 - set once, when a worker starts
    _owner = pid


def kill_worker_at_start() -> None:
    """In a file worker as it starts: its death, if CCTV_GENDER_KILL_WORKER_AT_START asks for it."""
    if os.environ.get(WORKER_START_CRASH_ENV):
        os.kill(os.getpid(), signal.SIGKILL)


def hang_worker_at_start() -> None:
    """In a file worker as it starts: a sleep, if CCTV_GENDER_HANG_WORKER_AT_START asks for one."""
    seconds = os.environ.get(WORKER_START_HANG_ENV)
    if seconds:
        time.sleep(float(seconds))


def kill_point(step: str) -> None:
    wanted = os.environ.get(KILL_ENV)
    if wanted and _named(wanted, step) and _times_reached(_counter(step)) >= _count(wanted):
        _counter(step).unlink(missing_ok=True)  # a later daemon given the same pid starts at 0
        _kill_daemon()
    paused = os.environ.get(PAUSE_ENV)
    if paused and _named(paused, step):
        file = Path(os.environ[PAUSE_FILE_ENV])
        # Counted beside the file (the test's): the n-th time only, in whichever process.
        if _times_reached(file.with_name(f"{file.name}.{step}")) == _count(paused):
            _pause(file)


def _named(wanted: str, step: str) -> bool:
    return wanted.partition(":")[0] == step


def _count(wanted: str) -> int:
    return int(wanted.partition(":")[2] or 1)


def _pause(file: Path) -> None:
    file.touch()
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def kill_on_frame(relative: PurePosixPath) -> None:
    poison = os.environ.get(POISON_ENV)
    if poison and relative.name == poison:
        _kill_daemon()
    if _owner is not None and os.environ.get(WORKER_CRASH_ENV) == relative.name:
        os.kill(os.getpid(), signal.SIGKILL)


def _times_reached(counter: Path) -> int:
    """How many times any process of this daemon has reached the step `counter` counts, this one
    included."""
    with counter.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        reached = int(handle.read() or 0) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(str(reached))
    return reached


def _counter(step: str) -> Path:
    return Path(tempfile.gettempdir()) / f"cctv-gender-kill-{_owner or os.getpid()}-{step}"


def _kill_daemon() -> None:
    if _owner is not None:
        os.kill(_owner, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
