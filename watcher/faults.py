"""Named kill points in a frame's life, for the fault-injection tests.

Set `CCTV_GENDER_KILL_AT=<step>` (or `<step>:<n>`, the n-th time the step is reached) and the
process SIGKILLs itself there: no special build, nothing happens when the variable is unset.
Steps: claimed, decoded, inferred, committed, linked (a frame's new name made, its old one not
yet removed), moved.

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
STEPS = ("claimed", "decoded", "inferred", "committed", "linked", "moved")

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
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != step:
        return
    if _times_reached(step) >= int(count or 1):
        _counter(step).unlink(missing_ok=True)  # a later daemon given the same pid starts at 0
        _kill_daemon()


def kill_on_frame(relative: PurePosixPath) -> None:
    poison = os.environ.get(POISON_ENV)
    if poison and relative.name == poison:
        _kill_daemon()
    if _owner is not None and os.environ.get(WORKER_CRASH_ENV) == relative.name:
        os.kill(os.getpid(), signal.SIGKILL)


def _times_reached(step: str) -> int:
    """How many times any process of this daemon has reached `step`, this one included."""
    with _counter(step).open("a+") as handle:
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
