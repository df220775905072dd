"""SIGTERM, SIGINT and SIGHUP acted on by a thread of their own, never inside a signal handler.

Python runs a signal's handler in the main thread between two of its bytecodes, whatever that
thread holds at the moment. The daemon's loop spends its idle time in a threading.Event's wait
and clear, which hold the event's lock: a handler that sets that event (to wake the loop) then
waits for a lock its own thread holds, and the daemon never stops; systemd kills it when its stop
times out. A handler that logs can likewise land inside the main thread's own write to stderr.
Here the handlers do nothing: Python's C-level handler writes each signal's number to a pipe
(signal.set_wakeup_fd), and a relay thread reads it and calls the daemon's callbacks like any
other thread would. Should that thread ever end (it never returns on its own), the handlers
fall back to the stop signals' defaults: SIGTERM or SIGINT then ends the process as if no
handler had been set, and the next start recovers the frames in progress.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_tracker
from types import FrameType

logger = logging.getLogger(__name__)

STOPPING = (signal.SIGTERM, signal.SIGINT)
RELOADING = signal.SIGHUP
_HELD = {*STOPPING, RELOADING}


@dataclass
class _Relay:
    """The process's one relay: what it calls, and whether its thread runs."""

    stop: Callable[[signal.Signals], None] = lambda _received: None
    reload: Callable[[], None] = lambda: None
    running: bool = False
    stopped: bool = False  # a stop signal was relayed (stop_signalled)


_relay_state = _Relay()


def hold_reloads() -> None:
    """SIGHUP ignored until relay_signals is given `reload`. Its default ends the process: a reload asked
    for while the daemon starts (the model loads for minutes) would stop it, and systemd counts an
    end by SIGHUP as clean, so it would not restart it. Ignoring is inherited by the processes
    started meanwhile (file workers, multiprocessing's resource tracker), which a SIGHUP sent to
    the whole service (`systemctl kill -s HUP`, a closed terminal) would otherwise end."""
    signal.signal(RELOADING, signal.SIG_IGN)


def relay_signals(
    *, stop: Callable[[signal.Signals], None], reload: Callable[[], None] | None = None
) -> None:
    """From now on SIGTERM and SIGINT call `stop`, SIGHUP `reload`, each on the relay thread. Only
    from the main thread (where Python lets signals be handled); called again, the new callbacks
    replace the old, on the same thread and pipe. Without `reload` SIGHUP stays as it was (ignored
    while the daemon starts, see hold_reloads): the stops are relayed from the start of start-up."""
    _relay_state.stop = stop
    if not _relay_state.running:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(write_end, False)  # set_wakeup_fd's demand: a full pipe never blocks a handler
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for number in STOPPING:
            signal.signal(number, _noted)
        _relay_state.running = True  # before the thread starts: its end sets it back
        threading.Thread(target=_relay, args=(read_end,), name="signal-relay", daemon=True).start()
    if reload is not None:
        _relay_state.reload = reload
        signal.signal(RELOADING, _noted)


def stop_signalled() -> bool:
    """Whether the relay has had SIGTERM or SIGINT in this process: for a wait deep in the
    daemon's start that the command's stop event does not reach (its file workers' first
    answers, see watcher.pipeline.worker_processes)."""
    return _relay_state.stopped


@contextmanager
def held_at_start() -> Iterator[None]:
    """The stop and reload signals blocked in this thread from a command line's first step
    (watcher.commands.main) until the command lets them through (release_held): `watch` once its
    relay takes them, any other command as its work begins. One that comes while the modules
    import (most of a second) waits, pending, instead of ending `watch` by SIGTERM's default or
    with a KeyboardInterrupt's traceback. The thread's mask as it was at the end."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def held_from_children() -> Iterator[None]:
    """The stop and reload signals blocked in this thread while it starts a process (the daemon's
    own are taken by its other threads meanwhile). The child inherits the mask across exec: until
    it calls release_held, once it ignores them (a file worker), a stop sent to the whole service
    (systemd's, Ctrl-C's) waits instead of ending it half-started, by SIGTERM's default or with a
    KeyboardInterrupt, as the relay's handlers are not inherited. multiprocessing's resource
    tracker is launched first if it is not running: a process start launches it, and that launch
    unblocks SIGINT and SIGTERM in this thread, inside the hold (the child then started without)."""
    resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def release_held() -> None:
    """The signals held let through: in a child started under held_from_children once it ignores
    them (those that came meanwhile are dropped), in a command held_at_start once it handles them
    (those that came meanwhile are acted on now)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


def ignore_stops() -> None:
    """SIGTERM and SIGINT ignored from now on: the daemon has stopped and the process is ending.
    At its exit Python puts back the default of every signal it handles (not of one ignored), and a
    second stop signal then (`kill` twice, Ctrl-C twice) ended the process by that signal, a clean
    stop's exit 0 turned into 143 or 130. Only from the main thread."""
    for number in STOPPING:
        signal.signal(number, signal.SIG_IGN)


def _noted(signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do while the relay runs, the number is already in the
    pipe. Without the relay nothing would read it, and a stop would be swallowed: the signal's
    default is restored and the signal sent again (SIGTERM's default ends the process)."""
    if _relay_state.running or signum not in STOPPING:
        return  # a reload with no relay is missed, never turned into SIGHUP's default, an exit
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _relay(read_end: int) -> None:
    try:
        _relay_numbers(read_end)
    finally:
        _relay_state.running = False
        logger.critical("the signal relay stopped: the next stop signal ends the process at once")


def _relay_numbers(read_end: int) -> None:
    while numbers := os.read(read_end, 64):
        for number in numbers:
            try:
                received = signal.Signals(number)
            except ValueError:
                continue  # a number no signal has
            try:
                if received in STOPPING:
                    _relay_state.stopped = True
                    _relay_state.stop(received)
                elif received == RELOADING:
                    _relay_state.reload()
            except Exception:
                # The relay must outlive a failing callback: the next SIGTERM still has to stop it.
                logger.exception("acting on %s failed", received.name)
