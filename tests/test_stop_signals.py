"""A stop signal always stops the daemon: acted on by the relay thread, not inside the handler,
which Python runs in the main thread whatever that thread holds (the loop's wake-up event's lock,
while it waits or clears it). Each case runs in a Python process of its own, with real signals;
one that hangs is killed by the timeout and fails."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from model.synthetic import write_bmp
from tests.helpers import files_under, mount_tmpfs, start_watch_process, wait_for

REPO = Path(__file__).resolve().parent.parent

# Sends itself SIGTERM while its main thread holds the wake-up event's lock, as the daemon's
# loop does inside Event.wait and Event.clear; the signal's Python handler then runs inside it.
_HOLDING_THE_LOCK = """
import os, signal, sys, threading, time
wake, stopped = threading.Event(), threading.Event()

def stop(*_):
    wake.set()  # as the daemon's handler did: stop.set(), then wake the loop
    stopped.set()

{install}
with wake._cond:  # the lock Event.wait and Event.clear hold
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10_000):
        pass  # bytecodes: Python runs the handler between them, the lock still held
    time.sleep(0.2)
print("stopped" if stopped.wait(10) and wake.is_set() else "not stopped")
"""


def run_python(source: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str] | None:
    """The script's run, or None when it had to be killed (it hung)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None


def test_a_stop_while_the_loop_holds_its_wake_up_lock_still_stops_it() -> None:
    relayed = (
        "from watcher.service.signals import relay_signals\nrelay_signals(stop=stop, reload=lambda: None)"
    )
    result = run_python(_HOLDING_THE_LOCK.format(install=relayed))
    assert result is not None and result.stdout.strip() == "stopped", result and result.stderr


def test_setting_the_event_inside_the_handler_would_hang_there() -> None:
    # Why the relay exists: the handler the daemon had (stop.set(); daemon.wake()) waits forever for
    # a lock its own thread holds. If Python ever makes this safe, this test says so.
    in_handler = "signal.signal(signal.SIGTERM, stop)"
    assert run_python(_HOLDING_THE_LOCK.format(install=in_handler), timeout=5.0) is None


def test_sighup_reloads_sigint_stops_and_a_failing_callback_leaves_the_relay_working() -> None:
    result = run_python(
        """
        import os, signal, threading
        from watcher.service.signals import relay_signals
        failed, reloaded, stopped, calls = threading.Event(), threading.Event(), threading.Event(), []

        def reload():
            calls.append("reload")
            if len(calls) == 1:
                failed.set()
                raise RuntimeError("the first reload fails")
            reloaded.set()

        def stop(received):
            calls.append(received.name)
            stopped.set()

        relay_signals(stop=stop, reload=reload)
        os.kill(os.getpid(), signal.SIGHUP)
        assert failed.wait(10)
        os.kill(os.getpid(), signal.SIGHUP)
        assert reloaded.wait(10)
        os.kill(os.getpid(), signal.SIGINT)
        assert stopped.wait(10)
        print(calls)
        """
    )
    assert result is not None and result.returncode == 0, result and result.stderr
    assert result.stdout.strip() == "['reload', 'reload', 'SIGINT']"
    assert "acting on SIGHUP failed" in result.stderr and "the first reload fails" in result.stderr


def test_a_stop_after_the_relay_thread_ended_still_ends_the_process() -> None:
    # The relay's callbacks catch Exception; a BaseException (SystemExit here) ends its thread. A
    # handler that did nothing then would swallow every later SIGTERM, and systemd would wait out
    # its stop timeout.
    result = run_python(
        """
        import os, signal, threading, time
        from watcher.service.signals import relay_signals

        def stop(_received):
            raise SystemExit  # ends the relay thread

        relay_signals(stop=stop, reload=lambda: None)
        relay = next(thread for thread in threading.enumerate() if thread.name == "signal-relay")
        os.kill(os.getpid(), signal.SIGTERM)
        relay.join(10)
        print("relay gone" if not relay.is_alive() else "relay alive", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # never reached the end: the signal's default ends the process first
        print("still running")
        """
    )
    assert result is not None, "the second SIGTERM was swallowed"
    assert result.stdout.strip() == "relay gone", result.stderr
    assert result.returncode == -15, result.stderr
    assert "the signal relay stopped" in result.stderr


def test_a_sighup_to_the_whole_service_while_it_starts_and_runs_only_reloads(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # `systemctl kill -s HUP` (or a closed terminal) signals every process of the service: the
    # daemon while it starts (before its relay exists), then its file workers and multiprocessing's
    # resource tracker. SIGHUP's default would end each of them, and the daemon with them.
    config = make_config(batch={"file_processes": 2})
    log = tmp_path / "daemon.log"
    process = start_watch_process(config, log, new_session=True)
    try:
        # Migrated: the model, the workers and the relay are still to come.
        wait_for(lambda: "database migrated" in log.read_text() or process.poll() is not None, timeout=120)
        os.killpg(process.pid, signal.SIGHUP)
        wait_for(lambda: " is on " in log.read_text() or process.poll() is not None, timeout=120)
        assert process.poll() is None, log.read_text()
        assert "file work on 2 processes" in log.read_text()
        os.killpg(process.pid, signal.SIGHUP)
        wait_for(lambda: "SIGHUP received" in log.read_text(), what="the reload")
        for index in range(3):
            write_bmp(tmp_path / "inbox" / "cam-01" / f"{index}.bmp", seed=index)
        wait_for(lambda: len(files_under(tmp_path / "processed")) == 3 or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "died" not in log.read_text(), log.read_text()


def test_more_sigterms_while_the_stopped_daemon_exits_leave_its_exit_code_0(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # `kill` twice, or Ctrl-C twice: a second signal found the process ending, Python having put
    # back the signal's default for its exit, and the clean stop exited 143 instead of 0.
    log = tmp_path / "daemon.log"
    process = start_watch_process(make_config(), log)
    try:
        wait_for(lambda: " is on " in log.read_text() or process.poll() is not None, timeout=120)
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopped: " in log.read_text() or process.poll() is not None)
        while process.poll() is None:  # SIGTERM after SIGTERM, all through the process's exit
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.005)
        assert process.returncode == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_frames_left_in_the_inbox_at_a_stop_are_counted_from_the_inbox(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # Polling with a long scan interval: a frame written after the last scan was never seen, and
    # the exit's "left in the inbox" line counted only the names seen (here: said nothing).
    config = make_config(inbox={"mode": "poll", "poll_scan_s": 3600})
    write_bmp(tmp_path / "inbox" / "cam-01" / "first.bmp")
    log = tmp_path / "daemon.log"
    process = start_watch_process(config, log)
    try:
        wait_for(lambda: files_under(tmp_path / "processed") or process.poll() is not None, timeout=120)
        write_bmp(tmp_path / "inbox" / "cam-01" / "late.bmp", seed=1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "1 frame left in the inbox for the next run: cam-01/late.bmp" in log.read_text(), log.read_text()


def test_the_frames_left_at_a_stop_are_not_counted_from_under_an_unmounted_inbox(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    # The inbox a mount that went away: the loop no longer scans the folder under it (another
    # disk's), but the exit's scan did, and named its frames "left in the inbox for the next run".
    inbox = tmp_path / "inbox"
    write_bmp(inbox / "cam-09" / "under-the-mount.bmp")
    mount_tmpfs(inbox, size="64m")
    try:
        write_bmp(inbox / "cam-01" / "first.bmp")
        log = tmp_path / "daemon.log"
        process = start_watch_process(make_config(inbox={"mode": "poll", "poll_scan_s": 3600}), log)
        wait_for(lambda: files_under(tmp_path / "processed") or process.poll() is not None, timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(inbox)], check=False)
    try:
        wait_for(lambda: "unmounted?" in log.read_text() or process.poll() is not None, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "stopped: 1 frame ok" in text, text
    assert "under-the-mount" not in text, text
