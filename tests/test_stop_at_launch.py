"""A stop in `watch`'s first second, while the command line imports its modules (the commands, the
config models, SQLAlchemy, Alembic: most of a second) before `watch` relays the signals, ends it
cleanly: exit 0, one line, no traceback, every frame where it was. Before, SIGTERM ended it by the
signal (-15) and Ctrl-C with a KeyboardInterrupt's traceback.

The signals are held from the entry point's first step (watcher.commands.main) until the command
takes them. What comes before that step (the interpreter's own start, some tens of milliseconds)
is Python's: a stop then has the signal's default, a death by it (systemd counts a death by
SIGTERM or SIGINT as a clean stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import REPO, files_under, start_watch_process, wait_for

FRAMES = [f"cam-01/{index}.bmp" for index in range(3)]
SIGNALS = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGINT, id="sigint")]


@pytest.fixture(autouse=True)
def _stops_at_their_defaults() -> Iterator[None]:
    """SIGTERM and SIGINT at their defaults here while `watch` is started: a child inherits an
    ignored signal, and an in-process `watch` run earlier in this process ignores them at its end
    (watcher.service.signals.ignore_stops); the child's start would then drop a stop this counts on."""
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for number, handler in before.items():
        if handler is not None:
            signal.signal(number, handler)


def _masks(pid: int) -> dict[str, int]:
    """The main thread's blocked and caught signals (/proc's SigBlk, SigCgt) as bit masks."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.partition(":\t")[::2] for line in lines)
    return {key: int(fields[key], 16) for key in ("SigBlk", "SigCgt") if key in fields}


def _has(mask: int, number: signal.Signals) -> bool:
    return bool(mask >> (number - 1) & 1)


def _relayed(pid: int) -> bool:
    """Whether the relay's handlers are set (Python's own start catches SIGINT, never SIGTERM)."""
    return _has(_masks(pid).get("SigCgt", 0), signal.SIGTERM)


def _held(pid: int, number: signal.Signals) -> bool:
    return _has(_masks(pid).get("SigBlk", 0), number)


def _started(make_config: Callable[..., Path], tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    for index, name in enumerate(FRAMES):
        write_bmp(tmp_path / "inbox" / name, seed=index)
    log = tmp_path / "daemon.log"
    return start_watch_process(make_config(batch={"file_processes": 0}), log, new_session=True), log


def _ended(process: subprocess.Popen[bytes], log: Path) -> tuple[int, str]:
    """Its exit code and log once it has ended (SIGKILLed, its whole group, if not within 120 s)."""
    try:
        return process.wait(timeout=120), log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _assert_clean_stop(code: int, text: str, tmp_path: Path) -> None:
    assert code == 0, text
    for trouble in ("Traceback", "KeyboardInterrupt"):
        assert trouble not in text, text
    assert text.count("stopped during start-up") + text.count("stopped: ") == 1, text
    folders = [tmp_path / "inbox", tmp_path / "processed", tmp_path / "failed"]
    if "stopped during start-up" in text:
        assert files_under(folders[0]) == FRAMES  # nothing taken
    else:  # started in full: what it took is processed, the rest where it was
        assert sum(len(files_under(folder)) for folder in folders) == len(FRAMES), text


@pytest.mark.parametrize("number", SIGNALS)
def test_a_stop_while_the_command_line_imports_waits_for_the_relay_and_ends_watch_cleanly(
    make_config: Callable[..., Path], tmp_path: Path, number: signal.Signals
) -> None:
    process, log = _started(make_config, tmp_path)
    try:
        # Held, not relayed yet: the modules are importing (the window that ended it by the signal).
        wait_for(
            lambda: process.poll() is not None or (_held(process.pid, number) and not _relayed(process.pid)),
            timeout=60,
            interval=0.002,
            what="watch to hold the stop signals",
        )
        assert process.poll() is None, log.read_text()
        os.killpg(process.pid, number)
        code, text = _ended(process, log)
    finally:
        if process.poll() is None:  # it never held them: not left running
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _assert_clean_stop(code, text, tmp_path)
    assert "stopped during start-up" in text, text


@pytest.mark.parametrize("delay_s", [0.0, 0.1, 0.3, 0.6, 1.0, 1.5])
@pytest.mark.parametrize("number", SIGNALS)
def test_a_stop_at_any_moment_of_watch_s_first_seconds_ends_it_cleanly(
    make_config: Callable[..., Path], tmp_path: Path, number: signal.Signals, delay_s: float
) -> None:
    process, log = _started(make_config, tmp_path)
    try:
        time.sleep(delay_s)  # not a synchronisation: the moment is what is tested
        reached = _held(process.pid, number) or _relayed(process.pid)  # ours now, not Python's start
        os.killpg(process.pid, number)
    finally:
        code, text = _ended(process, log)
    if not reached and code == -number:
        return  # in the interpreter's own start, before the entry point: the signal's default
    if not reached and number == signal.SIGINT and "KeyboardInterrupt" in text and "command_line" not in text:
        return  # Python's Ctrl-C in its own start, or in the entry point's few imports before it holds
    _assert_clean_stop(code, text, tmp_path)


def test_the_entry_point_imports_nothing_heavy_before_it_holds_the_signals() -> None:
    # What `cctv-gender` (the console script) imports before main() runs.
    script = (
        "import sys\n"
        "import watcher.commands.main\n"
        "heavy = ('sqlalchemy', 'pydantic', 'alembic', 'torch', 'watcher.config', 'watcher.commands.watch')\n"
        "print([name for name in heavy if name in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
