"""A stop signal while `watch` starts (database migration, model load, file worker processes
starting, recovery of a crash's leftovers) ends it promptly and cleanly: exit 0, one line saying
so, no traceback, no shared memory left to multiprocessing's resource tracker, and every frame
where it was or processed exactly once. Before, SIGTERM ended it by the signal (-15) and SIGINT
with a KeyboardInterrupt (130), and a recovery went through every leftover first.

Each case is a real `watch` process given real signals, as systemd (the whole service) or a
terminal's Ctrl-C (the whole process group) sends them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from model.synthetic import write_bmp
from tests.helpers import REPO, files_under, query, start_watch_process, wait_for
from watcher.config import load_config
from watcher.intake.claiming import claim
from watcher.service.instance import default_prefix

FRAMES = [f"cam-01/{index}.bmp" for index in range(5)]


def _descendants(pid: int) -> set[int]:
    """The process's children, and theirs (file workers, multiprocessing's resource tracker)."""
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found |= {int(child) for child in (task / "children").read_text().split()}
    except OSError:
        return found  # gone meanwhile
    return found | {grandchild for child in found for grandchild in _descendants(child)}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _stopped(process: subprocess.Popen[bytes], number: signal.Signals, log: Path) -> tuple[int, str]:
    """`number` sent to the process's whole group; its exit code and its log, once every process
    it started has ended too (the resource tracker says what leaked as it ends)."""
    seen = _descendants(process.pid)
    os.killpg(process.pid, number)
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wait_for(lambda: not any(_alive(pid) for pid in seen), what="the daemon's processes to end")
    return code, log.read_text()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize(
    "file_processes, reached",
    [
        pytest.param(0, lambda pid, text: "database migrated" in text, id="after_migration"),
        # The resource tracker (started with the frame buffers), then a first worker: the others
        # are starting, or answering their first call.
        pytest.param(2, lambda pid, text: len(_descendants(pid)) >= 2, id="workers_starting"),
    ],
)
def test_a_stop_while_watch_starts_ends_it_cleanly_with_nothing_taken(
    make_config: Callable[..., Path],
    tmp_path: Path,
    number: signal.Signals,
    file_processes: int,
    reached: Callable[[int, str], bool],
) -> None:
    for index, name in enumerate(FRAMES):
        write_bmp(tmp_path / "inbox" / name, seed=index)
    log = tmp_path / "daemon.log"
    process = start_watch_process(
        make_config(batch={"file_processes": file_processes}), log, new_session=True
    )
    wait_for(lambda: reached(process.pid, log.read_text()) or process.poll() is not None, timeout=120)
    assert process.poll() is None, log.read_text()
    code, text = _stopped(process, number, log)
    assert code == 0, text
    assert text.count("stopped during start-up") == 1, text
    for trouble in ("Traceback", "KeyboardInterrupt", "leaked", "Warning"):
        assert trouble not in text, text
    assert files_under(tmp_path / "inbox") == FRAMES  # nothing claimed, nothing moved
    assert files_under(tmp_path / "processed") == files_under(tmp_path / "failed") == []


def test_a_stop_during_a_crashs_recovery_ends_it_between_frames_and_the_next_start_finishes(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # A crash's leftovers, each processed alone: a stop waits for the frame in hand, not for all.
    config = make_config()
    inbox = tmp_path / "inbox"
    area = inbox / ".in-progress" / f"{default_prefix(load_config(config).source)}-0"
    area.mkdir(parents=True)
    count = 150
    for index in range(count):
        write_bmp(inbox / "cam-01" / f"{index}.bmp", width=16, height=16, seed=index)
        assert claim(inbox, area, PurePosixPath(f"cam-01/{index}.bmp")) is not None
    log = tmp_path / "daemon.log"
    process = start_watch_process(config, log, new_session=True)
    marker = f"recovering {count} frames left in progress"
    wait_for(lambda: marker in log.read_text() or process.poll() is not None, timeout=120)
    code, text = _stopped(process, signal.SIGTERM, log)
    assert code == 0, text
    assert "stopped during start-up, in the recovery" in text, text
    assert "Traceback" not in text, text
    database = tmp_path / "data" / "results.sqlite3"
    done = query(database, "SELECT count(*) FROM results")[0][0]
    left = [name for name in files_under(area) if not name.split("/")[-1].startswith(".attempts")]
    assert done + len(left) == count and left, text
    assert f"{len(left)} frames stay in progress" in text, text
    # Not marked as a clean stop: the frames not reached are still a crash's suspects.
    assert not (area / ".clean-stop").exists()

    once = subprocess.run(
        [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert once.returncode == 0, once.stderr
    assert f"recovering {len(left)} frames left in progress" in once.stderr
    assert "by a run that crashed" in once.stderr
    rows = query(
        database, "SELECT source_path, count(*) FROM results WHERE status = 'ok' GROUP BY source_path"
    )
    assert len(rows) == count and {row[1] for row in rows} == {1}
    assert len(files_under(tmp_path / "processed")) == count
    assert files_under(area) == []


# Run as a script: a spawned worker imports it again as __mp_main__, before anything of its own
# runs, and writes down the signals it was started with blocked.
_BLOCKED_AT_START = """
import os, signal, sys
from pathlib import Path
if __name__ == "__mp_main__":
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    Path(os.environ["BLOCKED_FILE"]).write_text(" ".join(sorted(signal.Signals(s).name for s in blocked)))
if __name__ == "__main__":
    from watcher.pipeline.file_workers import FileWorkers
    from watcher.pipeline.stages import FrameBounds
    FileWorkers(1, FrameBounds(max_pixels=10**6, max_file_bytes=10**7)).close()
"""


def test_a_file_worker_that_starts_multiprocessings_resource_tracker_still_starts_with_stops_held(
    tmp_path: Path,
) -> None:
    # No shared memory made yet in this process: the worker's start launches the resource
    # tracker, and that launch unblocked SIGINT and SIGTERM in the starting thread, inside the
    # hold: the worker then started with only SIGHUP blocked, and a stop sent to the whole
    # service while it imported ended it (a pool that could not start, exit 1).
    script = tmp_path / "start_one_worker.py"
    script.write_text(_BLOCKED_AT_START)
    blocked = tmp_path / "blocked"
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "BLOCKED_FILE": str(blocked)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert blocked.read_text() == "SIGHUP SIGINT SIGTERM"
