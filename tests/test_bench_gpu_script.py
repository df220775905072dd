"""bench/gpu.sh, the one command a lent GPU machine runs, works: here on the CPU with the tiny
model, so that a script nobody runs between GPU loans cannot rot. Marked `bench`: `.ci/run` runs
it after `make test` (`make bench-check`), so the suite itself stays quick."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent


TARGETS = ["watch-once", "live-mass-drop", "gpu-tests", "latency"]
DIAGNOSTICS = ["load-rss", "pipeline-stand-in", "gil-convoy", "inbox-events"]


def run_gpu_script(out: Path, *options: str) -> dict[str, Any]:
    """bench/gpu.sh on the CPU with the tiny model and a few frames; its summary.json, once every
    step it ran has ended well."""
    command = ["bash", "bench/gpu.sh", str(out), "--device", "cpu", "--model", "tiny"]
    command += ["--frames", "64", "--seconds", "3", *options]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    failed = [step["step"] for step in summary["steps"] if step["exit_code"]]
    assert not failed, {name: (out / f"{name}.log").read_text()[-2000:] for name in failed}
    assert 0 < summary["targets_seconds"] <= summary["seconds"] and summary["finished"] is True
    # The verdict, read from the figures above (on the CPU, said not to be the GPU's). With
    # --diagnostics the first step carries their variants: the targets' time is not measured.
    verdict = json.loads((out / "targets.json").read_text())
    assert verdict["on_a_gpu"] is False and not verdict["all_met"] and "not a GPU" in result.stdout
    unmeasured = {target["target"] for target in verdict["targets"] if target["status"] == "not measured"}
    assert unmeasured == ({"bench/gpu.sh, the targets' seconds"} if summary["diagnostics"] else set())
    return summary


@pytest.mark.bench
def test_gpu_script_runs_the_targets_alone_by_default(tmp_path: Path) -> None:
    out = tmp_path / "figures"
    # A folder used before: its figures must not pass for this run's.
    out.mkdir()
    (out / "latency.json").write_text('{"stale": true}')
    summary = run_gpu_script(out)
    assert "stale" not in json.loads((out / "latency.json").read_text())
    # Most important first: a GPU lease can end before the last step.
    assert [step["step"] for step in summary["steps"]] == TARGETS
    assert summary["diagnostics"] is False
    once = json.loads((out / "watch-once.json").read_text())
    assert once["watch_once_fps"] > 0 and once["peak_rss_mib"] > 0
    # Batch 256 on the same frames; the diagnostics' variants and sampled run left out.
    assert [(entry["batch_size"], entry["gpu_lanes"]) for entry in once["variants"]] == [(256, 3)]
    assert once["variants"][0]["watch_once_fps"] > 0 and once["variants"][0]["peak_rss_mib"] > 0
    assert "other_switch_interval_ms" not in once["rounds"][0]
    assert not (out / "profile-watch-once-b128.txt").exists() and "profile_error" not in once
    live = json.loads((out / "live-mass-drop.json").read_text())
    assert live["all_done"] and live["dropped_after_start"] and live["every_frame_accounted_for"]
    assert json.loads((out / "latency.json").read_text())
    for figures in DIAGNOSTICS:
        assert not (out / f"{figures}.json").exists(), figures


@pytest.mark.bench
def test_gpu_script_runs_every_step_on_the_cpu_with_diagnostics(tmp_path: Path) -> None:
    out = tmp_path / "figures"
    summary = run_gpu_script(out, "--diagnostics")
    # The targets first, then what says why one is missed.
    assert [step["step"] for step in summary["steps"]] == TARGETS + DIAGNOSTICS
    assert summary["diagnostics"] is True
    assert summary["targets_seconds"] < summary["seconds"]
    for figures in (
        "watch-once",
        "pipeline-stand-in",
        "load-rss",
        "live-mass-drop",
        "latency",
        "inbox-events",
        "gil-convoy",
    ):
        assert json.loads((out / f"{figures}.json").read_text()), figures
    # The other batch sizes and lanes, on the same frames.
    once = json.loads((out / "watch-once.json").read_text())
    assert once["watch_once_fps"] > 0 and once["peak_rss_mib"] > 0
    assert [(entry["batch_size"], entry["gpu_lanes"]) for entry in once["variants"]] == [(256, 3), (256, 6)]
    assert all(entry["watch_once_fps"] > 0 and entry["peak_rss_mib"] > 0 for entry in once["variants"])
    # Batch 128 at a 0.5 ms switch interval too (whether the GIL's waits still cap it).
    assert once["rounds"][0]["other_switch_interval_ms"] == 0.5 and once["watch_once_other_switch_fps"] > 0
    # The run sampled by py-spy: its stacks, or why there are none (no py-spy, no ptrace).
    if "profile_error" not in once:
        assert once["profiled_watch_once_ok"] == 64
        assert (out / "profile-watch-once-b128.txt").read_text().strip()
    stand_in = json.loads((out / "pipeline-stand-in.json").read_text())
    assert stand_in["ours"]["frames_per_s"] > 0 and stand_in["stand_in_gpu_ms"] == [6.4, 5.0]
    assert stand_in["file_processes"] >= 1  # the GPU's shape: file work on processes
    assert "to the device" in stand_in["ours"]["stage_seconds_of_median_run"]
    convoy = json.loads((out / "gil-convoy.json").read_text())
    for stage in ("tower", "model_stage"):
        for way in ("op_by_op", "traced", "traced_short_switch"):
            assert convoy[f"{stage}_{way}_beside_ms"] > 0, (stage, way)
    live = json.loads((out / "live-mass-drop.json").read_text())
    assert live["all_done"] and live["dropped_after_start"] and live["every_frame_accounted_for"]


def test_gpu_script_refuses_a_missing_output_folder_argument() -> None:
    result = subprocess.run(["bash", "bench/gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage: bench/gpu.sh OUT_DIR" in result.stderr


def processes_with(variable: str) -> list[int]:
    """The processes running (zombies aside) with `variable` (NAME=value) in their environment."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            running = environ.with_name("stat").read_text().rpartition(") ")[2].split()[0] != "Z"
            if running and variable.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def test_a_run_stopped_part_way_keeps_its_summary_and_its_verdict(tmp_path: Path) -> None:
    """A loan's end or a `timeout` stops the run with SIGTERM to its process group: the steps before
    the stop keep their figures, the step in flight is recorded as stopped and ended with what it
    started (it runs in a group of its own, under its limit), and summary.json, targets.json, the
    table and the archive of them all are still written (they were written only at the very end: a
    run stopped in its last step lost the summary and the verdict of every step before it)."""
    out, archive = tmp_path / "figures", tmp_path / "gpu.tar.gz"
    command = ["bash", "bench/gpu.sh", str(out), "--device", "cpu", "--model", "tiny", "--frames", "64"]
    run = subprocess.Popen(
        [*command, "--python", sys.executable, "--tar", str(archive)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # what the stopped step leaves, left here
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "watch-once.log").exists():  # the first step has started
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGTERM)
    printed, said = run.communicate(timeout=120)
    assert run.returncode == 143, said
    assert "stopped during watch-once" in said and "did not run to its end" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] is False and summary["targets_seconds"] is None
    assert [(step["step"], step.get("stopped")) for step in summary["steps"]] == [("watch-once", True)]
    verdict = json.loads((out / "targets.json").read_text())
    assert verdict["finished"] is False and not verdict["all_met"]
    assert {target["status"] for target in verdict["targets"]} == {"not measured"}
    # Nothing the stopped step started runs on (it would hold the GPU after the run).
    wait_for(
        lambda: processes_with(f"TMPDIR={tmp_path}") == [], timeout=10, what="the step's processes to end"
    )
    with tarfile.open(archive) as written:
        kept = written.extractfile("figures/summary.json")
        assert kept is not None and json.loads(kept.read()) == summary
        assert "figures/targets.json" in written.getnames() and "figures/watch-once.log" in written.getnames()


def test_the_live_step_sees_the_drop_s_last_row_within_a_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live target's frames/s runs to the moment bench/backlog.py sees the last row: seen up to
    0.5 s late (rows counted with every fifth RSS sample), a drop of 8,192 frames at 3,000 frames/s
    (2.7 s) looked up to 16% slower, right at the target."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    backlog = importlib.import_module("backlog")
    database = tmp_path / "results.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE results (source_path TEXT, status TEXT)")

    class DoneAtOnce:
        """The daemon as backlog.py watches it (DaemonProcess.memory_mib), its rows all in at the
        first look."""

        done_at: float | None = None

        def memory_mib(self) -> tuple[float, float]:
            if self.done_at is None:
                with sqlite3.connect(database) as connection:
                    connection.executemany(
                        "INSERT INTO results VALUES (?, 'ok')", [(f"cam-00/{i:06d}.bmp",) for i in range(64)]
                    )
                self.done_at = time.perf_counter()
            return 900.0, 1000.0

    daemon = DoneAtOnce()
    seen, samples = backlog.work_through(daemon, database, 64, 30.0)
    assert seen is not None and daemon.done_at is not None and samples == [900.0]
    assert seen - daemon.done_at < 0.25
