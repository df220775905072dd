"""Running as a systemd service: the unit, the install script, sd_notify and the watchdog,
journal priorities, `cctv-gender status`, Prometheus metrics."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from model.synthetic import write_bmp
from tests.helpers import RunningDaemon, files_under, query, wait_for
from watcher.commands.main import main
from watcher.config import load_config
from watcher.service.logs import JournalFormatter
from watcher.service.status import collect_status

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "cctv-gender.service"
EXPOSURE_TARGET = 3.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze"
)


@needs_systemd_analyze
def test_the_unit_verifies(tmp_path: Path) -> None:
    # The install location does not exist here; point ExecStart at this checkout's executable and
    # verify everything else exactly as shipped.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/cctv-gender/.venv/bin/cctv-gender", sys.executable))
    completed = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.strip() == ""


@needs_systemd_analyze
def test_the_unit_exposure_is_at_most_the_target() -> None:
    completed = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", completed.stdout)
    assert match, completed.stdout + completed.stderr
    assert float(match.group(1)) <= EXPOSURE_TARGET, completed.stdout


def test_the_unit_keeps_the_documented_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "TimeoutStopSec=",
        "RequiresMountsFor=",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "StateDirectory=cctv-gender",
        "DeviceAllow=/dev/nvidiactl rw",
    ):
        assert line in text, line
    assert "\nMemoryDenyWriteExecute=yes" not in text and "\nPrivateDevices=yes" not in text


class NotifySocket:
    """A real datagram socket standing in for systemd's end of NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.socket.recv(4096).decode())
            except TimeoutError:
                continue

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(tmp_path / "notify.sock")
    yield receiver
    receiver.close()


def _under_systemd_with_a_fast_watchdog(monkeypatch: pytest.MonkeyPatch, notify_socket: NotifySocket) -> None:
    """The environment systemd gives a `Type=notify` service, its watchdog at 200 ms: a daemon
    built after this (its notifier reads the environment) notifies `notify_socket`."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")


def test_ready_status_watchdog_and_stopping(
    make_config: Callable[..., Path], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = make_config()
    # A frame a killed run left in progress: READY=1 must wait until it is recovered.
    instance = f"{re.sub(r'[^A-Za-z0-9._-]', '-', socket.gethostname())}-0"
    write_bmp(tmp_path / "inbox" / ".in-progress" / instance / ("0123abcd" * 4) / "cam-01" / "left.bmp")
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env.update(NOTIFY_SOCKET=str(notify_socket.path), WATCHDOG_USEC="1000000")
    log = (tmp_path / "daemon.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "watcher", "watch", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_for(lambda: "READY=1" in notify_socket.lines(), timeout=120, what="READY=1")
        # Recovery was done before READY: the leftover frame's row is there.
        assert query(tmp_path / "data" / "results.sqlite3", "SELECT source_path FROM results") == [
            ("cam-01/left.bmp",)
        ]
        assert any(line.startswith("STATUS=") and "waiting" in line for line in notify_socket.lines())
        # The loop keeps turning, so the watchdog keeps being fed (at half the 1 s interval).
        wait_for(lambda: notify_socket.lines().count("WATCHDOG=1") >= 3, what="watchdog pings")
        write_bmp(tmp_path / "inbox" / "cam-01" / "new.bmp")
        wait_for(lambda: len(files_under(tmp_path / "processed")) == 2, what="a frame after READY")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    lines = notify_socket.lines()
    assert "STOPPING=1" in lines and lines.index("READY=1") < lines.index("STOPPING=1")


def test_the_watchdog_is_fed_only_for_our_pid() -> None:
    from watcher.service.notify import SystemdNotifier

    assert (
        SystemdNotifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s
        == 2.0
    )
    assert SystemdNotifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert not SystemdNotifier({}).enabled


@pytest.mark.parametrize(
    ("level", "prefix"),
    [(logging.DEBUG, "<7>"), (logging.INFO, "<6>"), (logging.WARNING, "<4>"), (logging.ERROR, "<3>")],
)
def test_journal_lines_carry_their_priority_and_no_timestamp(level: int, prefix: str) -> None:
    record = logging.LogRecord("watcher.pipeline.daemon", level, __file__, 1, "batch: %d frames", (3,), None)
    line = JournalFormatter().format(record)
    assert line == f"{prefix}watcher.pipeline.daemon: batch: 3 frames"


def test_status_reports_a_running_daemon_and_flags_a_stall(
    start_daemon: Callable[..., RunningDaemon],
    make_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stop = start_daemon().stop
    config_path = tmp_path / "config.toml"
    for index in range(3):
        write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)
    wait_for(lambda: len(files_under(tmp_path / "processed")) == 3, what="3 frames")

    assert main(["status", "--format", "json", "--config", str(config_path)]) == 0
    import json

    status = json.loads(capsys.readouterr().out)
    assert status["running"] and status["healthy"] and len(status["instances"]) == 1
    assert status["processed_last_hour"] == 3 and status["failed_last_hour"] == 0
    assert status["waiting"] == 0 and status["model_version"].startswith("zero-shot:")
    assert status["last_batch_age_s"] is not None and status["last_batch_age_s"] < 60

    stop.set()
    wait_for(lambda: not collect_status(load_config(config_path)).running, what="the daemon to stop")
    write_bmp(tmp_path / "inbox" / "late.bmp")
    assert main(["status", "--config", str(config_path)]) == 1
    assert "UNHEALTHY: 1 frame waiting and no daemon running" in capsys.readouterr().out

    # With a daemon that stopped making progress: waiting frames, nothing processed for long.
    later = datetime.now(UTC) + timedelta(hours=1)
    stalled = collect_status(load_config(config_path), now=later)
    assert not stalled.healthy


def test_metrics_are_served_when_asked(start_daemon: Callable[..., RunningDaemon], tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_daemon(metrics={"listen": f"127.0.0.1:{port}"})
    write_bmp(tmp_path / "inbox" / "a.bmp", seed=1)
    write_bmp(tmp_path / "inbox" / "b.bmp", seed=2)
    (tmp_path / "inbox" / "c.bmp").write_bytes(b"not an image")
    wait_for(
        lambda: len(files_under(tmp_path / "processed")) == 2 and files_under(tmp_path / "failed"),
        what="3 frames",
    )

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    wait_for(lambda: "cctv_gender_frames_processed_total 2.0" in scrape(), what="the counters")
    text = scrape()
    assert 'cctv_gender_frames_failed_total{reason="not_an_image"} 1.0' in text
    assert "cctv_gender_batch_seconds_count" in text and "cctv_gender_arrival_to_row_seconds_bucket" in text
    assert "cctv_gender_queue_depth 0.0" in text
    frames = {
        (match[0], match[1]): float(match[2])
        for match in re.findall(r'cctv_gender_frames_total\{camera="([^"]*)",label="([^"]*)"\} (\S+)', text)
    }
    assert sum(frames.values()) == 3 and frames[("", "failed")] == 1
    assert re.search(r"cctv_gender_last_batch_timestamp_seconds \d\.\d+e\+09", text)
    assert "process_resident_memory_bytes" in text and "python_info" in text
    assert re.search(r'cctv_gender_model_info\{version="zero-shot:[^"]+"\} 1\.0', text)


def test_a_hung_model_call_starves_the_watchdog(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model.clip_features import ClipFeatureExtractor

    # Simulated hang inside the model call (a stuck GPU, say): it blocks until released.
    release, entered = threading.Event(), threading.Event()
    original = ClipFeatureExtractor.image_features

    def hanging(self: ClipFeatureExtractor, images: list) -> object:
        entered.set()
        release.wait(timeout=60)
        return original(self, images)

    monkeypatch.setattr(ClipFeatureExtractor, "image_features", hanging)
    _under_systemd_with_a_fast_watchdog(monkeypatch, notify_socket)
    running = start_daemon()  # built after the environment above: its notifier reads it
    try:
        wait_for(lambda: notify_socket.lines().count("WATCHDOG=1") >= 3, what="pings while idle")
        write_bmp(tmp_path / "inbox" / "x.bmp")
        assert entered.wait(timeout=30)
        # Up to half an interval into a batch the loop may still ping; past that it must not.
        wait_for(
            lambda: (running.daemon.in_flight_seconds or 0) > 0.1, what="the batch to be half an interval old"
        )
        pings = notify_socket.lines().count("WATCHDOG=1")
        # Not synchronisation but the observation window: ten watchdog intervals of the hang must
        # pass without a single ping (systemd would restart the service).
        time.sleep(2.0)
        assert notify_socket.lines().count("WATCHDOG=1") == pings
        release.set()
        wait_for(
            lambda: notify_socket.lines().count("WATCHDOG=1") > pings, what="pings once the loop moves again"
        )
    finally:
        release.set()  # before the fixture stops the daemon, or it would wait for the hang


def test_a_long_backlog_keeps_feeding_the_watchdog(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model.clip_features import ClipFeatureExtractor

    # A backlog many watchdog intervals long, each batch well inside half an interval: the
    # service is working, and systemd must not restart it.
    original = ClipFeatureExtractor.image_features
    calls: list[float] = []

    def slow(self: ClipFeatureExtractor, images: list) -> object:
        calls.append(time.monotonic())
        time.sleep(0.05)  # the model's time for a batch, simulated
        return original(self, images)

    # Two batches run at once on a 2-thread CPU (watcher.pipeline.lanes): 48 batches span over a second.
    for index in range(96):
        write_bmp(tmp_path / "inbox" / f"{index:02d}.bmp", seed=index)
    monkeypatch.setattr(ClipFeatureExtractor, "image_features", slow)
    _under_systemd_with_a_fast_watchdog(monkeypatch, notify_socket)
    start_daemon(batch={"size": 2, "max_wait_ms": 50})

    wait_for(lambda: len(files_under(tmp_path / "processed")) == 96, what="the backlog")
    pings_during_backlog = [
        line for line in notify_socket.lines() if line == "WATCHDOG=1"
    ]  # the first ping comes with the first turn, after the backlog was scanned
    assert len(calls) == 48 and calls[-1] - calls[0] > 1.0  # many intervals of work
    assert len(pings_during_backlog) >= 5


def test_claiming_a_long_backlog_in_one_turn_keeps_feeding_the_watchdog(
    start_daemon: Callable[..., RunningDaemon],
    tmp_path: Path,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One loop turn claims every ready frame, however many: the claiming itself feeds the
    watchdog (Daemon._take), since no turn ends and no batch finishes meanwhile."""
    import watcher.pipeline.claims as claims_module

    original = claims_module.claim
    pings_at_claims: list[int] = []

    def slow_claim(*args: object, **kwargs: object) -> object:
        pings_at_claims.append(notify_socket.lines().count("WATCHDOG=1"))
        time.sleep(0.04)  # a slow filesystem's rename, simulated: 30 claims span six intervals
        return original(*args, **kwargs)

    for index in range(30):
        write_bmp(tmp_path / "inbox" / f"{index:02d}.bmp", seed=index)
    monkeypatch.setattr(claims_module, "claim", slow_claim)
    _under_systemd_with_a_fast_watchdog(monkeypatch, notify_socket)
    # One batch larger than the backlog, flushed only after the turn: nothing else feeds it.
    start_daemon(batch={"size": 64, "max_wait_ms": 60_000})

    wait_for(lambda: len(pings_at_claims) == 30, what="the backlog claimed")
    # Pings reach the socket's thread a moment after they are sent: the last claim's count may
    # miss the last one.
    assert pings_at_claims[-1] - pings_at_claims[0] >= 3, pings_at_claims


def test_the_grafana_dashboard_uses_only_metrics_the_daemon_exports() -> None:
    from watcher.reports import BatchReport
    from watcher.service.metrics import Metrics

    dashboard = json.loads((REPO / "watcher" / "service" / "grafana" / "cctv-gender.json").read_text())
    metrics = Metrics()
    # One batch, so the labelled counters have samples to list.
    metrics.record_batch(
        BatchReport(
            ok=1,
            failed=1,
            failures={"a.bmp": "truncated"},
            per_camera={("c", "female"): 1, ("c", "failed"): 1},
        )
    )
    exported = {sample.name for family in metrics.registry.collect() for sample in family.samples}
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:cctv_gender|process|python)_[a-z_]+)\b", target["expr"])
    }
    assert used and used <= exported, used - exported


def test_the_status_file_keeps_pace_with_batches_without_a_write_for_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watcher.reports import BatchReport
    from watcher.service import telemetry as telemetry_module
    from watcher.service.telemetry import DaemonStatus, Telemetry, status_dir

    telemetry = Telemetry(instance="host-1", data=tmp_path, model_version="v1")
    path = status_dir(tmp_path) / "host-1.json"

    def frames_in_file() -> int:
        status = DaemonStatus.read(path)
        assert status is not None
        return status.last_batch_frames

    telemetry.ready(waiting=3)
    # Batches closer together than the interval: their figures wait for a later write.
    monkeypatch.setattr(telemetry_module, "STATUS_WRITE_EVERY_S", 3600.0)
    telemetry.batch_done(BatchReport(ok=5, seconds=0.1))
    telemetry.turn(waiting=0, busy_s=None)
    assert frames_in_file() == 0
    # Stopping writes what is held back.
    telemetry.flush()
    assert frames_in_file() == 5
    # So does the next loop turn once the interval has passed.
    telemetry.batch_done(BatchReport(ok=7, seconds=0.1))
    assert frames_in_file() == 5
    monkeypatch.setattr(telemetry_module, "STATUS_WRITE_EVERY_S", 0.0)
    telemetry.turn(waiting=0, busy_s=None)
    assert frames_in_file() == 7


def _log_line_with(monkeypatch: pytest.MonkeyPatch, stderr: Path, journal_stream: str | None) -> str:
    """The line `configure_logging` writes to a real stderr file, with JOURNAL_STREAM as given."""
    from watcher.service.logs import configure_logging

    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    with stderr.open("w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        configure_logging("info")
        logging.getLogger("watcher.pipeline.daemon").warning("inbox gone")
        for handler in logging.getLogger().handlers:
            handler.flush()
    return stderr.read_text()


def test_journal_lines_only_when_stderr_is_the_journal_stream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stderr = tmp_path / "stderr.log"
    stderr.touch()
    own = os.stat(stderr)
    # systemd's stream is stderr itself: priorities, no timestamp.
    journal = _log_line_with(monkeypatch, stderr, f"{own.st_dev}:{own.st_ino}")
    assert journal == "<4>watcher.pipeline.daemon: inbox gone\n"
    # Inherited from a service that started this shell, with stderr elsewhere (a terminal, a file).
    other = os.stat(tmp_path)
    for inherited in (f"{other.st_dev}:{other.st_ino}", "8:12345", "garbage", None):
        line = _log_line_with(monkeypatch, stderr, inherited)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ WARNING watcher.pipeline.daemon: inbox gone\n", line), (
            line
        )
