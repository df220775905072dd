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


def met(result: dict[str, Any]) -> dict[str, bool | None]:
    return {target["target"]: target["met"] for target in result["targets"]}


def gpu_run(fps_128: float, rss_128: float, fps_256: float, rss_256: float) -> dict[str, dict[str, Any]]:
    return {
        "summary": {"device": "cuda", "machine": "NVIDIA H200", "targets_seconds": 350, "seconds": 560},
        "watch_once": {
            "frames": 8192,
            "batch_size": 128,
            "gpu_lanes": 3,
            "watch_once_fps": fps_128,
            "peak_rss_mib": rss_128,
            "variants": [
                {"batch_size": 256, "gpu_lanes": 3, "watch_once_fps": fps_256, "peak_rss_mib": rss_256}
            ],
        },
        "live_mass_drop": {"frames_per_s": 3100.0, "peak_rss_mib": 1900, "every_frame_accounted_for": True},
        "latency": {"median_ms": 520, "budget_ms": 604},
    }


def test_every_target_met_is_all_met(tmp_path: Path) -> None:
    write_figures(tmp_path, **gpu_run(5200, 1900, 5600, 2000))
    result, printed = verdict(tmp_path)
    assert result["all_met"] and result["on_a_gpu"] and set(met(result).values()) == {True}
    assert result["best_watch_once_run"]["batch_size"] == 256
    assert "all met" in printed and "MISSED" not in printed


def test_a_speed_counts_only_with_its_memory(tmp_path: Path) -> None:
    # Batch 256 is faster but over the RSS budget: batch 128's speed is what counts, and it misses.
    write_figures(tmp_path, **gpu_run(4100, 1900, 5600, 2161))
    result, printed = verdict(tmp_path)
    verdicts = met(result)
    assert result["best_watch_once_run"]["batch_size"] == 128
    assert verdicts["watch --once frames/s (best run)"] is False
    assert verdicts["watch --once peak RSS (that run)"] is True
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
    assert verdicts["single-frame latency, median"] is None
    assert verdicts["live daemon frames/s"] is False
    assert not result["all_met"] and "not measured" in printed
    assert result["gpu_utilisation"] == {"mean_percent": 40.0, "peak_percent": 50.0}


def test_an_empty_folder_says_nothing_was_measured(tmp_path: Path) -> None:
    result, printed = verdict(tmp_path)
    assert set(met(result).values()) == {None} and not result["all_met"] and not result["on_a_gpu"]
    assert "not a GPU" in printed
