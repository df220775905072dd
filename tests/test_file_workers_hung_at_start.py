"""A file worker process that hangs as it starts (its imports on a dead NFS share, say; here
CCTV_GENDER_HANG_WORKER_AT_START) neither holds `watch` past a stop nor keeps it waiting forever.

It holds the stop signals blocked until it ignores them (see watcher.service.signals
held_from_children), so a stop sent to the whole service does not end it, and the daemon waited
for its first answer with no bound and no look at the stop: systemd's SIGKILL, 180 s on, was
the only end. Now a stop ends the start at once (the workers SIGKILLed, exit 0, one line), and a
worker that has not answered within the bound is one clear error, every worker ended."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import files_under, start_watch_process, wait_for
from tests.test_stop_during_start import _alive, _descendants, _stopped
from watcher.errors import StartupError
from watcher.faults import WORKER_START_HANG_ENV
from watcher.pipeline.file_workers import FileWorkers
from watcher.pipeline.stages import FrameBounds

FRAMES = [f"cam-01/{index}.bmp" for index in range(3)]


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_while_a_file_worker_hangs_starting_ends_watch_at_once_and_the_workers_with_it(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, number: signal.Signals
) -> None:
    for index, name in enumerate(FRAMES):
        write_bmp(tmp_path / "inbox" / name, seed=index)
    monkeypatch.setenv(WORKER_START_HANG_ENV, "600")
    log = tmp_path / "daemon.log"
    process = start_watch_process(make_config(batch={"file_processes": 2}), log, new_session=True)
    # The resource tracker and both workers started: the daemon waits for their first answers.
    wait_for(lambda: len(_descendants(process.pid)) >= 3 or process.poll() is not None, timeout=120)
    assert process.poll() is None, log.read_text()
    code, text = _stopped(process, number, log)  # within 60 s, every process it started ended
    assert code == 0, text
    assert text.count("stopped during start-up, while the file worker processes started") == 1, text
    for trouble in ("Traceback", "KeyboardInterrupt", "leaked", "Warning"):
        assert trouble not in text, text
    assert files_under(tmp_path / "inbox") == FRAMES
    assert files_under(tmp_path / "processed") == files_under(tmp_path / "failed") == []


def test_a_file_worker_that_does_not_answer_within_the_bound_is_one_clear_error_and_is_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(WORKER_START_HANG_ENV, "60")
    began = time.monotonic()
    with pytest.raises(StartupError) as raised:
        FileWorkers(2, FrameBounds(max_pixels=10**6, max_file_bytes=10**7), start_s=1.0)
    assert time.monotonic() - began < 30  # the bound, not the hang (60 s, then it would answer)
    message = str(raised.value)
    assert "\n" not in message and "did not start within 1 s" in message, message
    assert "batch.file_processes = 0" in message, message
    pids = [int(pid) for pid in re.findall(r"\d{2,}", message.split(" did not")[0])]
    assert len(pids) == 2, message
    assert not any(_alive(pid) for pid in pids)  # SIGKILLed and reaped, not left hanging
