"""bench/gpu_targets.py, the verdict a lent GPU's run ends with: each of issue 14's targets met,
missed or not measured, from the JSON bench/gpu.sh wrote (here written by hand, as a GPU run
would have: no GPU is needed to read them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def write_figures(out: Path, **figures: dict[str, Any]) -> None:
    out.mkdir(exist_ok=True)
    for name, content in figures.items():
        (out / f"{name.replace('_', '-')}.json").write_text(json.dumps(content))


def verdict(out: Path) -> tuple[dict[str, Any], str]:
    result = subprocess.run(
        [sys.executable, "bench/gpu_targets.py", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "targets.json").read_text()), result.stdout


def met(result: dict[str, Any]) -> dict[str, str]:
    """Each target's status: met, missed or not measured."""
    return {target["target"]: target["status"] for target in result["targets"]}


def gpu_run(fps_128: float, rss_128: float, fps_256: float, rss_256: float) -> dict[str, dict[str, Any]]:
    return {
        "summary": {
            "device": "cuda",
            "model": "vit-b32",
            "machine": "NVIDIA H200",
            "diagnostics": False,
            "targets_seconds": 350,
            "seconds": 360,
        },
        "watch_once": {
            "frames": 8192,
            "batch_size": 128,
            "gpu_lanes": 3,
            "watch_once_fps": fps_128,
            "peak_rss_mib": rss_128,
            "variants": [
                {
                    "batch_size": 256,
                    "gpu_lanes": 3,
                    "watch_once_fps": fps_256,
                    "frames_ok": 8192,
                    "peak_rss_mib": rss_256,
                }
            ],
        },
        "live_mass_drop": {
            "frames_per_s": 3100.0,
            "peak_rss_mib": 1900,
            "all_done": True,
            "every_frame_accounted_for": True,
            "exit_code": 0,
        },
        "latency": {"median_ms": 520, "budget_ms": 604, "within_budget": True},
    }


def test_every_target_met_is_all_met(tmp_path: Path) -> None:
    write_figures(tmp_path, **gpu_run(5200, 1900, 5600, 2000))
    result, printed = verdict(tmp_path)
    assert result["all_met"] and result["on_a_gpu"] and set(met(result).values()) == {"met"}
    assert result["best_watch_once_run"]["batch_size"] == 256
    assert "all met" in printed and "MISSED" not in printed


def test_a_speed_counts_only_with_its_memory(tmp_path: Path) -> None:
    # Batch 256 is faster but over the RSS budget: batch 128's speed is what counts, and it misses.
    write_figures(tmp_path, **gpu_run(4100, 1900, 5600, 2161))
    result, printed = verdict(tmp_path)
    verdicts = met(result)
    assert result["best_watch_once_run"]["batch_size"] == 128
    assert verdicts["watch --once frames/s (best run)"] == "missed"
    assert verdicts["watch --once peak RSS (that run)"] == "met"
    assert not result["all_met"] and "MISSED" in printed and "not all met" in printed


def test_a_step_that_did_not_run_is_not_measured_never_met(tmp_path: Path) -> None:
    figures = gpu_run(5200, 1900, 5600, 2000)
    del figures["latency"]
    figures["live_mass_drop"]["every_frame_accounted_for"] = False  # fast, but not exactly once
    write_figures(tmp_path, **figures)
    (tmp_path / "gpu-utilisation.csv").write_text(
        "timestamp, utilization.gpu [%], memory.used [MiB]\n2026/11/28 10:00:00.000, 30 %, 900 MiB\n"
        "2026/11/28 10:00:00.500, 50 %, 950 MiB\n"
    )
    result, printed = verdict(tmp_path)
    verdicts = met(result)
    assert verdicts["single-frame latency, median"] == "not measured"
    assert verdicts["live daemon frames/s"] == "missed"
    assert not result["all_met"] and "not measured" in printed
    assert result["gpu_utilisation"] == {"mean_percent": 40.0, "peak_percent": 50.0}


def test_an_empty_folder_says_nothing_was_measured(tmp_path: Path) -> None:
    result, printed = verdict(tmp_path)
    assert set(met(result).values()) == {"not measured"} and not result["all_met"] and not result["on_a_gpu"]
    assert "not a GPU" in printed


def test_only_vit_b32_on_a_gpu_can_meet_them_all(tmp_path: Path) -> None:
    figures = gpu_run(5200, 1900, 5600, 2000)
    figures["summary"]["model"] = "tiny"
    write_figures(tmp_path, **figures)
    result, printed = verdict(tmp_path)
    assert set(met(result).values()) == {"met"} and not result["all_met"]
    assert "not the targets' figures" in printed


def test_odd_figures_are_not_measured_and_never_crash_the_verdict(tmp_path: Path) -> None:
    figures = gpu_run(5200, 1900, 5600, 2000)
    figures["watch_once"]["watch_once_fps"] = "5200"  # text
    figures["watch_once"]["variants"][0]["frames_ok"] = 8000  # frames that failed: no speed to count
    figures["live_mass_drop"]["frames_per_s"] = True
    figures["summary"]["diagnostics"] = True  # the first step carried the diagnostics: not the targets' time
    write_figures(tmp_path, **figures)
    # Infinity is what json.loads reads from a figure gone wrong.
    (tmp_path / "latency.json").write_text('{"median_ms": Infinity, "budget_ms": 604}')
    (tmp_path / "gpu-utilisation.csv").write_text(
        "timestamp, utilization.gpu [%], memory.used [MiB]\nx, [N/A], [N/A]\nx, 80 %, 1 MiB\nx, 9"
    )
    result, _ = verdict(tmp_path)
    verdicts = met(result)
    assert verdicts["watch --once frames/s (best run)"] == "not measured"
    assert verdicts["live daemon frames/s"] == "not measured"
    assert verdicts["single-frame latency, median"] == "not measured"
    assert verdicts["bench/gpu.sh, the targets' seconds"] == "not measured"
    assert result["gpu_utilisation"] == {"mean_percent": 80.0, "peak_percent": 80.0}
    (tmp_path / "watch-once.json").write_text('["not", "figures"]')
    (tmp_path / "summary.json").write_text("null")
    result, _ = verdict(tmp_path)
    assert not result["all_met"] and result["watch_once_runs"] == []


def test_the_steps_own_verdict_decides_where_rounded_figures_tie(tmp_path: Path) -> None:
    figures = gpu_run(5200, 1900, 5600, 2000)
    figures["latency"] = {"median_ms": 604, "budget_ms": 604, "within_budget": False}  # 604.4 against 603.6
    write_figures(tmp_path, **figures)
    result, _ = verdict(tmp_path)
    assert met(result)["single-frame latency, median"] == "missed" and not result["all_met"]


def test_a_folder_that_is_not_there_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/gpu_targets.py", str(tmp_path / "nowhere")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "is not a folder" in result.stderr


def test_a_step_that_timed_out_is_said_and_the_targets_time_is_not_measured(tmp_path: Path) -> None:
    """A target's step ended at its limit (or failed at once): its figures are not measured, the
    table says why, and the targets' seconds are not theirs (they ran short or to a limit)."""
    figures = gpu_run(5200, 1900, 5600, 2000)
    del figures["watch_once"]
    figures["summary"]["steps"] = [
        {"step": "watch-once", "seconds": 360, "exit_code": 124, "limit_seconds": 360, "timed_out": True},
        {"step": "live-mass-drop", "seconds": 50, "exit_code": 0, "limit_seconds": 180, "timed_out": False},
        {"step": "gpu-tests", "seconds": 3, "exit_code": 4, "limit_seconds": 120, "timed_out": False},
        {"step": "latency", "seconds": 40, "exit_code": 0, "limit_seconds": 150, "timed_out": False},
    ]
    write_figures(tmp_path, **figures)
    result, printed = verdict(tmp_path)
    assert result["steps_not_ended_well"] == {
        "watch-once": "timed out after 360 s",
        "gpu-tests": "failed (exit 4, see its .log)",
    }
    assert "step watch-once: timed out after 360 s" in printed
    assert met(result)["bench/gpu.sh, the targets' seconds"] == "not measured"
    assert met(result)["live daemon frames/s"] == "met" and not result["all_met"]


def test_processes_on_the_gpu_at_start_are_warned_of(tmp_path: Path) -> None:
    figures = gpu_run(5200, 1900, 5600, 2000)
    figures["summary"]["gpu_processes_at_start"] = [
        {"pid": 4242, "process_name": "/usr/bin/python3", "used_memory": "30720 MiB"}
    ]
    write_figures(tmp_path, **figures)
    result, printed = verdict(tmp_path)
    assert result["gpu_processes_at_start"][0]["pid"] == 4242
    assert "warning: already on the GPU at start, the figures may be low: 4242 /usr/bin/python3" in printed
