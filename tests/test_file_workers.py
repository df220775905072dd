"""The file worker processes' hand-offs (watcher.pipeline.file_workers): each caller writes its
shares to idle workers' pipes and reads the answers itself. Real spawned processes; the jobs are
plain functions, so that what is tested is the hand-off: answers in order whatever the callers
beside, a worker's exception raised in its caller, and a worker's death failing every caller
(the one waiting for a free worker too) instead of hanging it."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.pipeline.file_workers import FileWorkers, FileWorkersFailed
from watcher.pipeline.stages import FrameBounds

BOUNDS = FrameBounds(max_pixels=10**6, max_file_bytes=10**7)


@pytest.fixture
def workers() -> Iterator[FileWorkers]:
    started = FileWorkers(3, BOUNDS)
    try:
        yield started
    finally:
        started.close()


def _joined(threads: list[threading.Thread], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a caller hung"


def test_callers_side_by_side_each_get_their_answers_in_order(workers: FileWorkers) -> None:
    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.lists(st.integers(-(10**6), 10**6), max_size=12), min_size=1, max_size=5))
    def check(calls: list[list[int]]) -> None:
        answers: dict[int, list[int]] = {}

        def call(number: int, values: list[int]) -> None:
            answers[number] = workers._run([functools.partial(abs, value) for value in values])  # noqa: SLF001

        threads = [threading.Thread(target=call, args=item, daemon=True) for item in enumerate(calls)]
        for thread in threads:
            thread.start()
        _joined(threads)
        assert answers == {number: [abs(value) for value in values] for number, values in enumerate(calls)}

    check()


def test_a_jobs_exception_is_raised_in_its_caller_and_the_workers_go_on(
    workers: FileWorkers, tmp_path: os.PathLike[str]
) -> None:
    missing = os.path.join(tmp_path, "missing")
    with pytest.raises(FileNotFoundError) as raised:
        workers._run([functools.partial(os.getpid), functools.partial(os.stat, missing)])  # noqa: SLF001
    assert raised.value.filename == missing
    # Every worker is idle again, and answers.
    assert set(workers._run([functools.partial(os.getpid)] * 9)) <= workers.pids  # noqa: SLF001


def test_a_worker_that_dies_fails_its_caller_and_the_caller_waiting_for_a_worker() -> None:
    workers = FileWorkers(1, BOUNDS)
    try:
        (pid,) = workers.pids
        outcomes: dict[str, BaseException | None] = {}

        def call(name: str, job: functools.partial[object]) -> None:
            try:
                workers._run([job])  # noqa: SLF001
                outcomes[name] = None
            except BaseException as error:  # noqa: BLE001 - recorded for the assertion
                outcomes[name] = error

        sleeping = threading.Thread(
            target=call, args=("at work", functools.partial(time.sleep, 60)), daemon=True
        )
        sleeping.start()
        deadline = time.monotonic() + 30
        while not workers._idle.empty():  # noqa: SLF001 - until the only worker is taken
            assert time.monotonic() < deadline, "the worker was never taken"
            time.sleep(0.01)
        waiting = threading.Thread(target=call, args=("waiting", functools.partial(os.getpid)), daemon=True)
        waiting.start()
        os.kill(pid, signal.SIGKILL)
        _joined([sleeping, waiting], timeout_s=30)
        assert isinstance(outcomes["at work"], FileWorkersFailed)
        assert isinstance(outcomes["waiting"], FileWorkersFailed)
        with pytest.raises(FileWorkersFailed, match="a file worker process died"):
            workers._run([functools.partial(os.getpid)])  # noqa: SLF001
    finally:
        workers.close()  # a dead worker is no reason to hang or fail here
