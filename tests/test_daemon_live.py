"""The real daemon loop, live: in a thread (stopped by its Event) and as a subprocess (real signals)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import RunningDaemon, files_under, query, start_watch_process, wait_for


def _row_count(tmp_path: Path) -> int:
    return query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results")[0][0]


def test_frames_dropped_while_running_are_processed(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    running = start_daemon()
    running.turns_from_now(1)

    for index in range(5):
        write_bmp(tmp_path / "inbox" / "cam-03" / f"{index}.bmp", seed=index)

    wait_for(lambda: _row_count(tmp_path) == 5, what="5 rows")
    wait_for(lambda: len(files_under(tmp_path / "processed")) == 5, what="5 processed files")
    assert files_under(tmp_path / "inbox") == []
    assert {
        camera for (camera,) in query(tmp_path / "data" / "results.sqlite3", "SELECT camera FROM results")
    } == {"cam-03"}


def test_a_frame_written_slowly_in_two_halves_is_not_read_early(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    # settle_ms = 0: only the BMP header's declared size keeps the daemon from reading early.
    running = start_daemon(inbox={"settle_ms": 0, "poll_interval_ms": 10})
    data = bmp_bytes(width=320, height=240)
    path = tmp_path / "inbox" / "slow.bmp"
    with path.open("wb") as writer:
        writer.write(data[: len(data) // 2])
        writer.flush()
        running.turns_from_now(5)  # the writer pauses while the daemon looks again and again
        assert path.exists() and _row_count(tmp_path) == 0
        writer.write(data[len(data) // 2 :])

    wait_for(lambda: _row_count(tmp_path) == 1, what="the slow frame's row")
    rows = query(
        tmp_path / "data" / "results.sqlite3", "SELECT status, size_bytes, width, height FROM results"
    )
    assert rows == [("ok", len(data), 320, 240)]


def test_a_frame_its_writer_closed_skips_the_settle_time(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    # A minute of settling: only the writer's close event can make this frame ready in time.
    running = start_daemon(inbox={"mode": "events", "settle_ms": 60_000, "poll_interval_ms": 20})
    running.turns_from_now(1)
    (tmp_path / "inbox" / "cam").mkdir()
    running.turns_from_now(2)  # the new camera folder gets its watch
    write_bmp(tmp_path / "inbox" / "cam" / "closed.bmp")

    wait_for(lambda: _row_count(tmp_path) == 1, timeout=10, what="the row, well before settling")
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, status FROM results")
    assert rows == [("cam/closed.bmp", "ok")]


def test_a_partial_batch_is_flushed_after_max_wait(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path
) -> None:
    running = start_daemon(batch={"size": 64, "max_wait_ms": 200})
    running.turns_from_now(1)
    write_bmp(tmp_path / "inbox" / "only.bmp")

    wait_for(lambda: _row_count(tmp_path) == 1, timeout=10, what="the lone frame's row")
    # The report is updated once the batch's moves are done, just after the commit.
    wait_for(lambda: running.daemon.report.batches == 1, what="the batch to be reported")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_commits_the_batch_in_hand_then_exits_zero(
    make_config: Callable[..., Path], tmp_path: Path, signum: signal.Signals
) -> None:
    # A batch that would wait a minute: the signal must flush it, not drop or abandon it.
    config = make_config(batch={"size": 64, "max_wait_ms": 60_000})
    log = tmp_path / "daemon.log"
    process = start_watch_process(config, log)
    try:
        wait_for(lambda: "watching" in log.read_text(), timeout=120, what="the daemon to start")
        for index in range(3):
            write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)
        in_progress = tmp_path / "inbox" / ".in-progress"
        wait_for(lambda: len(files_under(in_progress)) == 3, what="3 frames claimed into the batch")

        process.send_signal(signum)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()

    assert _row_count(tmp_path) == 3
    assert files_under(tmp_path / "processed") == ["0.bmp", "1.bmp", "2.bmp"]
    assert files_under(in_progress) == []
    text = log.read_text()
    assert f"{signum.name} received" in text and "Traceback" not in text


def test_the_overlapped_pipeline_drains_a_backlog_exactly_once(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the model on a GPU the loop claims and decodes the next batch while one is in flight.
    # No GPU here: the processor is told its model is on one, so this path runs on the CPU.
    from watcher.pipeline.processing import BatchProcessor

    monkeypatch.setattr(BatchProcessor, "model_on_accelerator", property(lambda self: True))
    for index in range(100):
        write_bmp(tmp_path / "inbox" / f"cam-{index % 4}" / f"{index:03d}.bmp", seed=index)
    running = start_daemon(batch={"size": 8, "max_wait_ms": 50})

    wait_for(lambda: len(files_under(tmp_path / "processed")) == 100, what="the backlog")
    wait_for(lambda: running.daemon.report.ok == 100, what="every batch taken back")
    rows = query(tmp_path / "data" / "results.sqlite3", "SELECT source_path, status FROM results")
    assert len(rows) == 100 and {source for source, _ in rows} == {
        f"cam-{index % 4}/{index:03d}.bmp" for index in range(100)
    }
    assert files_under(tmp_path / "inbox") == [] and running.daemon.report.batches >= 13


def test_cpu_lanes_run_full_batches_side_by_side_and_a_partial_one_alone(
    start_daemon: Callable[..., RunningDaemon], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two model threads on the CPU: full batches run two at a time, one thread each; the partial
    # batch at the end of the backlog runs alone on both. The first batch holds on until a second
    # one has started beside it: with one batch at a time that never happens and the test fails.
    import threading

    from watcher.pipeline.processing import BatchProcessor

    original = BatchProcessor.process
    lock = threading.Lock()
    running_now: list[int] = []
    calls: list[tuple[int, int | None, int]] = []  # frames, threads, batches already running
    second_started = threading.Event()

    def observed(
        self: BatchProcessor, frames: list, *, cpu_threads: int | None = None, **rest: object
    ) -> object:
        with lock:
            calls.append((len(frames), cpu_threads, len(running_now)))
            running_now.append(len(frames))
            first = len(calls) == 1
            if len(calls) == 2:
                second_started.set()
        try:
            if first:
                second_started.wait(timeout=30)
            return original(self, frames, cpu_threads=cpu_threads)
        finally:
            with lock:
                running_now.remove(len(frames))

    monkeypatch.setattr(BatchProcessor, "process", observed)
    for index in range(52):
        write_bmp(tmp_path / "inbox" / f"{index:03d}.bmp", seed=index)
    running = start_daemon(model={"cpu_threads": 2}, batch={"size": 8, "max_wait_ms": 50})

    wait_for(lambda: running.daemon.report.ok == 52, what="the backlog")
    assert second_started.is_set() and calls[1][2] == 1, "the second batch did not run beside the first"
    full = [threads for frames, threads, _ in calls if frames == 8]
    partial = [(threads, beside) for frames, threads, beside in calls if frames < 8]
    assert len(full) == 6 and set(full) == {1}
    assert partial == [(2, 0)]
    assert len(files_under(tmp_path / "processed")) == 52 and files_under(tmp_path / "inbox") == []
    assert query(
        tmp_path / "data" / "results.sqlite3", "SELECT count(DISTINCT source_path) FROM results"
    ) == [(52,)]
