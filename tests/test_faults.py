"""Fault injection: SIGKILL the daemon at each step of a frame's life (and at random moments),
restart it, let it drain, and check the invariant: every input exactly once in the database and
exactly once in processed/ or failed/, nothing left behind, nothing overwritten."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model.clip_features import ClipFeatureExtractor
from model.synthetic import bmp_bytes, write_bmp
from tests.helpers import BOMB_BMP, files_under, query, query_url, wait_for
from watcher.commands.main import main
from watcher.config import load_config
from watcher.faults import KILL_ENV, STEPS
from watcher.service.status import collect_status, instance_state

REPO = Path(__file__).resolve().parent.parent
GOOD_FRAMES = 120
PREEXISTING = b"an older frame that must never be overwritten"


def _old(path: Path) -> None:
    past = time.time() - 3600
    os.utime(path, (past, past), follow_symlinks=False)


def drop_inputs(inbox: Path, processed: Path) -> dict[str, str | None]:
    """Good frames and every kind of broken input; returns source path → content sha256 (None
    for files that are not regular)."""
    expected: dict[str, str | None] = {}

    def put(relative: str, data: bytes, *, old: bool = False) -> None:
        path = inbox / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if old:
            _old(path)
        expected[relative] = hashlib.sha256(data).hexdigest()

    for index in range(GOOD_FRAMES):
        put(f"cam-{index % 4:02d}/frame-{index:04d}.bmp", bmp_bytes(width=32, height=24, seed=index))
    same = bmp_bytes(width=20, height=10, seed=7)
    put("cam-00/copy a.bmp", same)  # identical bytes under two names: two frames
    put("cam-00/copy b.bmp", same)
    put("cam-01/ünïcødé name with spaces.bmp", bmp_bytes(width=16, height=16, seed=8))
    put("cam-01/" + "long" * 60 + ".bmp", bmp_bytes(width=16, height=16, seed=9))
    put("cam-02/clash.bmp", bmp_bytes(width=16, height=16, seed=10))
    (processed / "cam-02").mkdir(parents=True, exist_ok=True)
    (processed / "cam-02" / "clash.bmp").write_bytes(PREEXISTING)
    put("broken/truncated.bmp", bmp_bytes(width=64, height=48, seed=11)[:500], old=True)
    put("broken/empty.bmp", b"", old=True)
    put("broken/not-a-bmp.bmp", b"GIF89a, or anything else at all")
    put("broken/bomb.bmp", BOMB_BMP)
    expected["broken/bomb.bmp"] = None  # refused from its header before it is read: no hash
    put("broken/bad-header.bmp", b"BM" + (60).to_bytes(4, "little") + b"\xff" * 54)
    os.mkfifo(inbox / "broken" / "pipe.bmp")
    expected["broken/pipe.bmp"] = None
    (inbox / "broken" / "link.bmp").symlink_to("/etc/passwd")
    expected["broken/link.bmp"] = None
    return expected


def assert_invariant(root: Path, expected: dict[str, str | None], url: str) -> None:
    rows = query_url(url, "SELECT source_path, status, stored_path, sha256, error, frame_key FROM results")
    sources = [row[0] for row in rows]
    assert sorted(sources) == sorted(expected), "each input must have exactly one row"
    assert len({row[5] for row in rows}) == len(rows)
    for source, status, stored, sha256, error, _ in rows:
        stored_path = Path(stored)
        root_folder = root / ("processed" if status == "ok" else "failed")
        assert stored_path.is_relative_to(root_folder), (source, status, stored)
        assert os.path.lexists(stored_path), f"{source}: {stored} is missing"
        if status == "failed":
            assert error, f"{source} failed without a reason"
        if expected[source] is not None:
            assert sha256 == expected[source], f"{source}: recorded hash differs from the input"
            assert hashlib.sha256(stored_path.read_bytes()).hexdigest() == sha256, f"{stored} was overwritten"
    stored_files = files_under(root / "processed") + files_under(root / "failed")
    assert len(stored_files) == len(rows) + 1  # + the pre-existing processed/cam-02/clash.bmp
    assert (root / "processed" / "cam-02" / "clash.bmp").read_bytes() == PREEXISTING
    assert files_under(root / "inbox") == [], "inbox and in-progress area must be empty"
    if url.startswith("sqlite"):
        assert query(root / "data" / "results.sqlite3", "PRAGMA integrity_check") == [("ok",)]
    ok = {row[0] for row in rows if row[1] == "ok"}
    assert {f"cam-{i % 4:02d}/frame-{i:04d}.bmp" for i in range(GOOD_FRAMES)} <= ok
    failed = {row[0]: row[4] for row in rows if row[1] == "failed"}
    assert failed["broken/truncated.bmp"].startswith("truncated:")
    assert failed["broken/empty.bmp"].startswith("truncated: empty file")
    assert "not a recognised image format" in failed["broken/not-a-bmp.bmp"]
    assert failed["broken/bomb.bmp"].startswith("too large")
    assert (
        "not a regular file" in failed["broken/pipe.bmp"]
        and "not a regular file" in failed["broken/link.bmp"]
    )


def _run(
    config: Path, *args: str, kill_at: str | None = None, wait: bool = True, log: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if key not in ("JOURNAL_STREAM", KILL_ENV)}
    if kill_at:
        env[KILL_ENV] = kill_at
    log = log or config.parent / f"daemon-{time.monotonic_ns()}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "watcher", "watch", "--config", str(config), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    process.log = log  # type: ignore[attr-defined]
    if wait:
        process.wait(timeout=300)
    return process


def _log(process: subprocess.Popen[bytes]) -> str:
    return process.log.read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture(params=[0, 2], ids=["file-threads", "file-processes"])
def file_processes(request: pytest.FixtureRequest) -> int:
    """Every crash test runs with the file work on threads and on worker processes (the kill
    points in a worker kill the whole daemon, see watcher.faults)."""
    return int(request.param)


@pytest.fixture
def fault_config(make_config: Callable[..., Path], database_url: str, file_processes: int) -> Path:
    # Every crash test runs on SQLite and on PostgreSQL: the frame key is the idempotency key on both.
    return make_config(
        batch={"size": 16, "max_wait_ms": 50, "file_processes": file_processes},
        inbox={"settle_ms": 0, "readiness_timeout_s": 5},
        database={"url": database_url},
    )


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step_then_restarted(
    fault_config: Path, tmp_path: Path, step: str, database_url: str
) -> None:
    expected = drop_inputs(tmp_path / "inbox", tmp_path / "processed")

    killed = _run(fault_config, "--once", kill_at=f"{step}:3")
    assert killed.returncode == -signal.SIGKILL, _log(killed)
    drained = _run(fault_config, "--once")
    assert drained.returncode == 0, _log(drained)
    assert "recovered" in _log(drained)

    assert_invariant(tmp_path, expected, database_url)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_random_moments(fault_config: Path, tmp_path: Path, seed: int, database_url: str) -> None:
    expected = drop_inputs(tmp_path / "inbox", tmp_path / "processed")
    rng = random.Random(seed)
    for _ in range(2):
        process = _run(fault_config, wait=False)
        wait_for(lambda: "watching" in _log(process), timeout=120, what="the daemon to start")  # noqa: B023
        # The work takes about a second after start-up: the kill lands anywhere in it.
        time.sleep(rng.uniform(0.0, 0.8))
        process.kill()
        process.wait(timeout=60)
    drained = _run(fault_config, "--once")
    assert drained.returncode == 0, _log(drained)

    assert_invariant(tmp_path, expected, database_url)


@pytest.mark.parametrize("raised", ["RuntimeError", "OutOfMemoryError"])
def test_a_frame_that_breaks_the_model_is_isolated(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: str
) -> None:
    """Simulated model failure (say, out of GPU memory) on one particular picture: 13×7 pixels.
    The batch is split until the frame is alone, each half run once the error is gone: its
    traceback holds the failed pass's tensors, which on a GPU out of memory the halves need."""
    import weakref

    import torch

    original = ClipFeatureExtractor.image_features
    failed_passes: list[weakref.ref[torch.Tensor]] = []
    alive_at_a_later_pass: list[bool] = []
    error = {"RuntimeError": RuntimeError, "OutOfMemoryError": torch.OutOfMemoryError}[raised]

    def failing(self: ClipFeatureExtractor, images: list) -> np.ndarray:
        alive_at_a_later_pass.extend(tensor() is not None for tensor in failed_passes)
        if any(image.shape[:2] == (7, 13) for image in images):  # (height, width) arrays
            activations = torch.empty(1_000_000)  # what the pass held when it failed
            failed_passes.append(weakref.ref(activations))
            raise error("CUDA out of memory (simulated)")
        return original(self, images)

    monkeypatch.setattr(ClipFeatureExtractor, "image_features", failing)
    config = make_config(batch={"size": 8})
    for index in range(7):
        write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)
    write_bmp(tmp_path / "inbox" / "poison.bmp", width=13, height=7)

    assert main(["watch", "--once", "--config", str(config)]) == 0

    assert len(failed_passes) == 4  # 8 frames, then 4, 2 and the poison alone
    assert alive_at_a_later_pass and not any(alive_at_a_later_pass)
    rows = dict(
        query(
            tmp_path / "data" / "results.sqlite3", "SELECT source_path, coalesce(error, status) FROM results"
        )
    )
    assert rows.pop("poison.bmp") == f"model error: {raised}: CUDA out of memory (simulated)"
    assert set(rows.values()) == {"ok"} and len(rows) == 7


def test_a_failed_device_stops_the_daemon_and_its_frames_wait_for_the_next_start(
    make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device error (CUDA's context lost) would fail every later frame: the daemon stops with its
    batch claimed, nothing failed, and the next start takes every frame."""
    import torch

    original = ClipFeatureExtractor.image_features

    def lost(self: ClipFeatureExtractor, images: list) -> np.ndarray:
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered (simulated)")

    config = make_config(batch={"size": 8})
    for index in range(8):
        write_bmp(tmp_path / "inbox" / f"{index}.bmp", seed=index)
    monkeypatch.setattr(ClipFeatureExtractor, "image_features", lost)
    with pytest.raises(torch.AcceleratorError):
        main(["watch", "--once", "--config", str(config)])
    assert files_under(tmp_path / "failed") == [] and files_under(tmp_path / "processed") == []
    assert query(tmp_path / "data" / "results.sqlite3", "SELECT count(*) FROM results") == [(0,)]

    monkeypatch.setattr(ClipFeatureExtractor, "image_features", original)
    assert main(["watch", "--once", "--config", str(config)]) == 0
    statuses = query(tmp_path / "data" / "results.sqlite3", "SELECT status FROM results")
    assert sorted(statuses) == [("ok",)] * 8 and len(files_under(tmp_path / "processed")) == 8


def test_three_daemons_share_an_inbox_and_survive_losing_one(
    make_config: Callable[..., Path], tmp_path: Path, database_url: str
) -> None:
    # On SQLite (one host) and on PostgreSQL (what a site with several hosts uses).
    config = make_config(
        batch={"size": 32, "max_wait_ms": 100},
        inbox={"settle_ms": 0, "rescan_interval_s": 1.0, "poll_interval_ms": 50},
        database={"url": database_url},
    )
    frames = 3000
    for index in range(frames):
        write_bmp(
            tmp_path / "inbox" / f"cam-{index % 8}" / f"{index:05d}.bmp", width=16, height=12, seed=index
        )
    assert main(["db", "upgrade", "--config", str(config)]) == 0

    def row_count() -> int:
        return query_url(database_url, "SELECT count(*) FROM results")[0][0]

    def all_at_work() -> bool:
        # Locked and past their first heartbeat: started, not just starting (on 2 busy cores one
        # daemon can still be loading its model when the others have done a quarter).
        seen = collect_status(load_config(config)).instances_seen
        return len(seen) == 3 and all(item.running and item.state == "running" for item in seen)

    daemons = [_run(config, wait=False) for _ in range(3)]
    try:
        wait_for(all_at_work, timeout=240, what="three daemons at work")
        wait_for(
            lambda: row_count() >= frames // 4,
            timeout=240,
            what="a quarter of the frames",
        )
        daemons[0].kill()
        daemons[0].wait(timeout=60)
        wait_for(
            lambda: row_count() == frames and not files_under(tmp_path / "inbox"),
            timeout=300,
            what="the survivors to drain everything",
        )
    finally:
        for process in daemons[1:]:
            process.send_signal(signal.SIGTERM)
        for process in daemons[1:]:
            assert process.wait(timeout=60) == 0

    rows = query_url(database_url, "SELECT source_path, status FROM results")
    assert len(rows) == frames and len({source for source, _ in rows}) == frames
    assert {status for _, status in rows} == {"ok"}
    assert len(files_under(tmp_path / "processed")) == frames
    if database_url.startswith("sqlite"):
        assert query(tmp_path / "data" / "results.sqlite3", "PRAGMA integrity_check") == [("ok",)]
    instances = {path.name for path in (tmp_path / "inbox" / ".in-progress").glob("*.lock")}
    assert len(instances) == 3  # each daemon took its own identity
    # status: the killed one is gone (it never said it stopped), the others stopped; none holds frames.
    seen = collect_status(load_config(config)).instances_seen
    assert sorted(item.state for item in seen) == ["running", "stopped", "stopped"]
    assert sorted(instance_state(item) for item in seen) == ["gone", "stopped", "stopped"]
    assert all(item.claimed == 0 and not item.running for item in seen)
