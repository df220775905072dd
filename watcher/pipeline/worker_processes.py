"""A file worker process seen from the daemon: started with the stop signals held, awaited until it
first answers, ended (see watcher.pipeline.file_workers, which shares out the work).

A worker that hangs as it starts (its imports on a dead NFS share, say) holds the stop signals
blocked (held_from_children) and would then ignore them: the wait for its first answer is
bounded (START_S: a one-line error, exit 1, and systemd's restart), and a stop signal heard
meanwhile (SIGTERM, Ctrl-C) ends the start at once, the workers SIGKILLed: they hold nothing yet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from multiprocessing.process import BaseProcess
from typing import Any

from watcher.errors import StartupError, StartupStopped
from watcher.pipeline import file_work
from watcher.service.signals import held_from_children, stop_signalled

# How long the workers have to answer once started: a spawn and a few imports take seconds.
START_S = 120.0
# How often that wait looks for a stop signal.
_LOOK_S = 0.2
# How long a worker has to end once asked to (or it is killed): its share is done by then.
_STOP_S = 10.0


class WorkerProcess:
    """One worker process and the daemon's end of its pipe."""

    def __init__(self, context: Any, daemon_pid: int, number: int) -> None:
        self.connection, theirs = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=file_work.serve, args=(theirs, daemon_pid), name=f"file-worker-{number}", daemon=True
        )
        with held_from_children():  # until it ignores them (file_work.start_worker)
            self.process.start()
        self.pid = self.process.pid
        theirs.close()  # the worker's end lives in the worker: its death is then our EOF


class StartWait:
    """The wait for the workers' first answers, looked at each time it runs out (look_s)."""

    def __init__(self, within_s: float) -> None:
        self._within_s = within_s
        self._deadline = time.monotonic() + within_s

    def look_s(self) -> float:
        return max(0.0, min(_LOOK_S, self._deadline - time.monotonic()))

    def go_on(self, waiting: Iterable[int | None]) -> None:
        """StartupStopped once a stop signal came, StartupError once past the bound: `waiting`
        are the workers not answered yet."""
        if stop_signalled():
            raise StartupStopped("while the file worker processes started")
        if time.monotonic() >= self._deadline:
            pids = [str(pid) for pid in waiting]
            raise StartupError(
                f"file worker {'process' if len(pids) == 1 else 'processes'} {', '.join(pids)} did not "
                f"start within {self._within_s:g} s (hung on a slow or dead filesystem?); "
                "batch.file_processes = 0 keeps file work on threads"
            )


def kill_all(workers: Iterable[WorkerProcess]) -> None:
    """Each worker SIGKILLed: a failed start's, which they may not have answered (and SIGTERM they
    ignore, or hold blocked still)."""
    for worker in workers:
        with contextlib.suppress(ValueError):  # closed already
            worker.process.kill()


def stop_all(workers: list[WorkerProcess]) -> None:
    """Each worker told to end, and given _STOP_S to (then killed); their pipes closed."""
    for worker in workers:
        with contextlib.suppress(OSError):  # already gone
            worker.connection.send(None)  # done: the worker ends
    for worker in workers:
        worker.process.join(_STOP_S)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.connection.close()
        worker.process.close()
