"""Issue 14's GPU targets, met or missed, from what bench/gpu.sh wrote: one table and targets.json.

    .venv/bin/python bench/gpu_targets.py OUT_DIR

bench/gpu.sh runs it last, so a lent GPU's run ends with the verdict rather than six JSON files to
read by hand. A figure whose step failed or did not run is "not measured", never a pass. On a CPU
(`--device cpu`) the same table is printed, and says that it is not the GPU's.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

WATCH_ONCE_FPS = 5000.0
WATCH_ONCE_MIN_FRAMES = 8192
LIVE_FPS = 3000.0
PEAK_RSS_MIB = 2048.0
SCRIPT_SECONDS = 8 * 60


def _figures(out: Path, name: str) -> dict[str, Any] | None:
    try:
        figures: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None  # its step failed or did not run
    return figures


def _target(
    name: str, value: float | None, goal: float | None, *, at_least: bool, unit: str
) -> dict[str, Any]:
    """One target: None for `met` when its figure (or its goal) was not measured."""
    met = None if value is None or goal is None else (value >= goal if at_least else value <= goal)
    return {"target": name, "value": value, "goal": goal, "at_least": at_least, "unit": unit, "met": met}


def _watch_once_runs(once: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each batch size and number of lanes `watch --once` ran at, with its frames/s and peak RSS."""
    if not once:
        return []
    first_round = (once.get("rounds") or [{}])[0]
    runs = [
        {
            "batch_size": once["batch_size"],
            "gpu_lanes": once["gpu_lanes"],
            **_speed(once, first_round.get("rss_at_peak_mib")),
        }
    ]
    runs += [
        {
            "batch_size": entry["batch_size"],
            "gpu_lanes": entry["gpu_lanes"],
            **_speed(entry, entry.get("rss_at_peak_mib")),
        }
        for entry in once.get("variants", [])
    ]
    return runs


def _speed(entry: dict[str, Any], parts: dict[str, Any] | None) -> dict[str, Any]:
    """Frames/s and peak RSS, with what the RSS was made of at its peak (anon, file, shmem: the
    arenas), which says where memory over the budget would have to come from."""
    return {
        "frames_per_s": entry.get("watch_once_fps"),
        "peak_rss_mib": entry.get("peak_rss_mib"),
        "rss_at_peak_mib": parts,
    }


def _gpu_utilisation(out: Path) -> dict[str, float] | None:
    """Mean and peak of nvidia-smi's samples over the whole run (idle set-up included)."""
    try:
        with (out / "gpu-utilisation.csv").open(newline="") as samples:
            rows = list(csv.reader(samples))
    except OSError:
        return None
    percents = [float(row[1].strip().rstrip(" %")) for row in rows[1:] if len(row) > 1 and row[1].strip()]
    if not percents:
        return None
    return {"mean_percent": round(statistics.fmean(percents), 1), "peak_percent": max(percents)}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest run within the memory budget, else the fastest: a speed counts with its memory."""
    measured = [run for run in runs if run["frames_per_s"] is not None and run["peak_rss_mib"] is not None]
    within = [run for run in measured if run["peak_rss_mib"] <= PEAK_RSS_MIB]
    return max(within or measured, key=lambda run: run["frames_per_s"], default=None)


def verdict(out: Path) -> dict[str, Any]:
    summary = _figures(out, "summary") or {}
    once = _figures(out, "watch-once") or {}
    live = _figures(out, "live-mass-drop") or {}
    latency = _figures(out, "latency") or {}
    runs = _watch_once_runs(once or None)
    best = _best(runs) or {}
    live_fps = live.get("frames_per_s")
    if live and not live.get("every_frame_accounted_for"):
        live_fps = 0.0  # fast but not exactly once is no pass
    targets = [
        _target(
            "watch --once frames/s (best run)",
            best.get("frames_per_s"),
            WATCH_ONCE_FPS,
            at_least=True,
            unit="frames/s",
        ),
        _target(
            "watch --once peak RSS (that run)",
            best.get("peak_rss_mib"),
            PEAK_RSS_MIB,
            at_least=False,
            unit="MiB",
        ),
        _target(
            "watch --once frames (that run)",
            once.get("frames"),
            WATCH_ONCE_MIN_FRAMES,
            at_least=True,
            unit="frames",
        ),
        _target("live daemon frames/s", live_fps, LIVE_FPS, at_least=True, unit="frames/s"),
        _target("live daemon peak RSS", live.get("peak_rss_mib"), PEAK_RSS_MIB, at_least=False, unit="MiB"),
        _target(
            "single-frame latency, median",
            latency.get("median_ms"),
            latency.get("budget_ms"),
            at_least=False,
            unit="ms",
        ),
        _target(
            "bench/gpu.sh, the targets' seconds",
            summary.get("targets_seconds"),
            SCRIPT_SECONDS,
            at_least=False,
            unit="s",
        ),
    ]
    return {
        "device": summary.get("device"),
        "machine": summary.get("machine"),
        "on_a_gpu": summary.get("device") == "cuda",
        "all_met": all(target["met"] for target in targets),
        "targets": targets,
        "watch_once_runs": runs,
        "best_watch_once_run": best or None,
        "gpu_utilisation": _gpu_utilisation(out),
    }


def _shown(target: dict[str, Any]) -> str:
    value = "not measured" if target["value"] is None else f"{target['value']:,.0f} {target['unit']}"
    goal = "?" if target["goal"] is None else f"{target['goal']:,.0f}"
    sign = "≥" if target["at_least"] else "≤"
    met = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
    return f"{target['target']:<38} {value:>18}   goal {sign} {goal:>6}   {met}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder bench/gpu.sh wrote")
    out = parser.parse_args().out
    result = verdict(out)
    (out / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    where = (
        result["machine"]
        if result["on_a_gpu"]
        else f"{result['machine']}: not a GPU, not the targets' figures"
    )
    print(f"issue 14's targets on {where}")
    for target in result["targets"]:
        print("  " + _shown(target))
    for run in result["watch_once_runs"]:
        print(
            f"  watch --once at batch {run['batch_size']}, {run['gpu_lanes']} lanes: "
            f"{run['frames_per_s']} frames/s, peak RSS {run['peak_rss_mib']} MiB",
            run["rss_at_peak_mib"] or "",
        )
    if result["gpu_utilisation"] is not None:
        print(f"  GPU utilisation over the run: {result['gpu_utilisation']}")
    print("all met" if result["all_met"] else "not all met")


if __name__ == "__main__":
    main()
