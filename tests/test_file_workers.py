"""The file worker processes' hand-offs (watcher.pipeline.file_workers): each caller writes its
shares to idle workers' pipes and reads the answers itself. Real spawned processes; the jobs are
plain functions (of this module, or builtins), so that what is tested is the hand-off: answers
in order whatever the callers beside, a job's exception raised in its caller only once its other
jobs have ended, every worker given back after an exception, and a worker's death failing every
caller (the one waiting for a free worker too) instead of hanging it, whatever else failed."""

from __future__ import annotations

import errno
import functools
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.pipeline import file_workers
from watcher.pipeline.file_workers import FileWorkers, FileWorkersFailed
from watcher.pipeline.stages import FrameBounds

REPO = Path(__file__).resolve().parent.parent
BOUNDS = FrameBounds(max_pixels=10**6, max_file_bytes=10**7)


class _NotRebuildable(Exception):
    """Pickles as (class, (message,)): rebuilding it in the daemon raises TypeError."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")


def _raise_not_rebuildable() -> None:
    raise _NotRebuildable("/x", "bad")


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, "No space left on device", "/out")


def _die_after(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(1)


@pytest.fixture
def workers() -> Iterator[FileWorkers]:
    started = FileWorkers(2, BOUNDS)
    try:
        yield started
    finally:
        started.close()


def _idle(workers: FileWorkers) -> int:
    return workers._idle.qsize()  # noqa: SLF001 - how many workers are free to take a job


def _run(workers: FileWorkers, jobs: list[Callable[[], object]]) -> list[object]:
    return workers._run(jobs)  # noqa: SLF001 - the hand-off itself, without a batch around it


def _joined(threads: list[threading.Thread], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a caller hung"


def _poll(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_callers_side_by_side_each_get_their_answers_in_order(workers: FileWorkers) -> None:
    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.lists(st.integers(-(10**6), 10**6), max_size=12), min_size=1, max_size=5))
    def check(calls: list[list[int]]) -> None:
        answers: dict[int, list[object]] = {}

        def call(number: int, values: list[int]) -> None:
            answers[number] = _run(workers, [functools.partial(abs, value) for value in values])

        threads = [threading.Thread(target=call, args=item, daemon=True) for item in enumerate(calls)]
        for thread in threads:
            thread.start()
        _joined(threads)
        assert answers == {number: [abs(value) for value in values] for number, values in enumerate(calls)}
        assert _idle(workers) == workers.count

    check()


def test_a_jobs_exception_is_raised_once_its_other_jobs_ended_and_every_worker_is_back(
    workers: FileWorkers, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing")
    started = time.monotonic()
    with pytest.raises(FileNotFoundError) as raised:
        _run(workers, [functools.partial(os.stat, missing), functools.partial(time.sleep, 0.5)])
    # Not before the other job ended: a batch gives its arena back once this returns.
    assert time.monotonic() - started >= 0.5
    assert raised.value.filename == missing
    assert any("in file worker" in note for note in raised.value.__notes__)  # where it happened
    assert _idle(workers) == workers.count
    assert set(_run(workers, [functools.partial(os.getpid)] * 6)) <= workers.pids


def test_what_cannot_cross_a_pipe_fails_its_call_and_loses_no_worker(workers: FileWorkers) -> None:
    with pytest.raises(TypeError):  # the job itself does not pickle
        _run(workers, [functools.partial(abs, threading.Lock())])
    with pytest.raises(RuntimeError, match="cannot be read"):  # its exception cannot be rebuilt here
        _run(workers, [functools.partial(_raise_not_rebuildable), functools.partial(time.sleep, 0.2)])
    with pytest.raises(RuntimeError, match="not picklable"):  # its result does not pickle
        _run(workers, [functools.partial(threading.Lock)])
    assert _idle(workers) == workers.count
    assert len(_run(workers, [functools.partial(os.getpid)] * 4)) == 4


def test_a_death_beside_a_jobs_exception_still_stops_the_daemon(workers: FileWorkers) -> None:
    # A full disk alone parks the batch (transient); a worker that died must stop the daemon.
    with pytest.raises(FileWorkersFailed) as raised:
        _run(workers, [functools.partial(_disk_full), functools.partial(_die_after, 0.3)])
    assert isinstance(raised.value.__cause__, OSError) and raised.value.__cause__.errno == errno.ENOSPC
    with pytest.raises(FileWorkersFailed):
        _run(workers, [functools.partial(os.getpid)])


def test_a_worker_that_dies_fails_its_caller_and_the_caller_waiting_for_a_worker() -> None:
    workers = FileWorkers(1, BOUNDS)
    try:
        (pid,) = workers.pids
        outcomes: dict[str, BaseException | None] = {}

        def call(name: str, job: Callable[[], object]) -> None:
            try:
                _run(workers, [job])
                outcomes[name] = None
            except BaseException as error:  # noqa: BLE001 - recorded for the assertion
                outcomes[name] = error

        sleeping = threading.Thread(
            target=call, args=("at work", functools.partial(time.sleep, 60)), daemon=True
        )
        sleeping.start()
        _poll(lambda: _idle(workers) == 0, "the only worker was never taken")
        waiting = threading.Thread(target=call, args=("waiting", functools.partial(os.getpid)), daemon=True)
        waiting.start()

        def waiting_for_a_worker() -> bool:
            frame = sys._current_frames().get(waiting.ident or 0)  # noqa: SLF001 - where it stands
            return frame is not None and frame.f_code.co_name == "_hand_out"

        _poll(waiting_for_a_worker, "the second caller never waited for a worker")
        os.kill(pid, signal.SIGKILL)
        _joined([sleeping, waiting], timeout_s=30)
        assert isinstance(outcomes["at work"], FileWorkersFailed)
        assert isinstance(outcomes["waiting"], FileWorkersFailed)
        with pytest.raises(FileWorkersFailed, match="a file worker process died"):
            _run(workers, [functools.partial(os.getpid)])
    finally:
        workers.close()  # a dead worker is no reason to hang or fail here


def test_a_process_that_never_closes_its_workers_still_exits() -> None:
    # Start-up failing after the workers started (a metrics port taken, say): the workers ignore
    # SIGTERM, which multiprocessing's exit sends them before waiting for them.
    code = (
        "import sys; from watcher.pipeline.file_workers import FileWorkers; "
        "from watcher.pipeline.stages import FrameBounds; "
        "workers = FileWorkers(2, FrameBounds(max_pixels=10, max_file_bytes=10)); sys.exit(3)"
    )
    ended = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60, check=False)
    assert ended.returncode == 3


@dataclass(frozen=True)
class _Frozen(Exception):
    """An exception that takes no notes (its attributes are frozen)."""

    reason: str


def _raise_frozen() -> None:
    raise _Frozen("bad")


class _DiskFullWithALock(OSError):
    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "No space left on device")
        self.lock = threading.Lock()  # does not pickle


def _raise_disk_full_with_a_lock() -> None:
    raise _DiskFullWithALock


def test_an_odd_exception_in_a_job_fails_the_call_not_the_worker(workers: FileWorkers) -> None:
    with pytest.raises(RuntimeError, match="FrozenInstanceError"):  # it cannot even be rebuilt here
        _run(workers, [functools.partial(_raise_frozen)])
    # One that does not pickle still tells a full disk (transient: the batch is parked) by errno.
    with pytest.raises(OSError) as raised:
        _run(workers, [functools.partial(_raise_disk_full_with_a_lock)])
    assert raised.value.errno == errno.ENOSPC
    assert _idle(workers) == workers.count
    assert len(_run(workers, [functools.partial(os.getpid)] * 4)) == 4


def test_a_worker_whose_answer_was_left_half_read_is_never_used_again(
    workers: FileWorkers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Out of memory while the answer is read: the rest of it is still in the pipe.
    def out_of_memory(fd: int) -> bytes:
        raise MemoryError

    with monkeypatch.context() as patched:
        patched.setattr(file_workers, "receive_message", out_of_memory)
        with pytest.raises(FileWorkersFailed):
            _run(workers, [functools.partial(os.getpid)])
    with pytest.raises(FileWorkersFailed):
        _run(workers, [functools.partial(os.getpid)])


def _answer_in_part_then_die(promised: int, written: int, how: str) -> None:
    """In a worker: the start of an answer of `promised` bytes, `written` of them, then its death."""
    (connection,) = [item for item in gc.get_objects() if isinstance(item, Connection) and not item.closed]
    os.write(connection.fileno(), promised.to_bytes(4, "big") + b"x" * written)
    if how == "exit":
        os._exit(1)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(
    ("promised", "written", "how"),
    [
        pytest.param(100, 10, "exit", id="short_answer_cut_then_exit"),
        pytest.param(500_000, 300_000, "kill", id="answer_past_the_buffer_cut_then_killed"),
        pytest.param(100, 0, "kill", id="header_only_then_killed"),
    ],
)
def test_a_worker_that_dies_within_its_answer_fails_the_call_and_never_hangs(
    promised: int, written: int, how: str
) -> None:
    workers = FileWorkers(2, BOUNDS)
    try:
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                _run(workers, [functools.partial(_answer_in_part_then_die, promised, written, how)])
            except BaseException as error:  # noqa: BLE001 - what the caller got, for the assertion
                outcome.append(error)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        _joined([caller])
        assert len(outcome) == 1 and isinstance(outcome[0], FileWorkersFailed)
    finally:
        workers.close()


def test_no_process_a_job_starts_keeps_a_workers_pipe_open(workers: FileWorkers) -> None:
    # A helper process inheriting the worker's end would hide the worker's death from the daemon.
    inheritable = _run(workers, [functools.partial(_inheritable_sockets)] * workers.count)
    assert inheritable == [[]] * workers.count


def _inheritable_sockets() -> list[str]:
    found = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            target, fd = os.readlink(entry), int(entry.name)
            if target.startswith("socket:") and os.get_inheritable(fd):
                found.append(target)
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
    return found
