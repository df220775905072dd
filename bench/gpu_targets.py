"""Issue 14's GPU targets, met or missed, from what bench/gpu.sh wrote: one table and targets.json.

    .venv/bin/python bench/gpu_targets.py OUT_DIR

bench/gpu.sh runs it last, so a lent GPU's run ends with the verdict rather than JSON files to read
by hand. A figure whose step failed (gpu.sh removes a step's JSON before running it) or did not run,
or that is not a finite number, is "not measured", never met. Only a run on a GPU with ViT-B/32
can meet them all: on a CPU, or with the tiny model, the same table is printed and says so.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

# Issue 14's figures.
WATCH_ONCE_FPS = 5000.0
WATCH_ONCE_MIN_FRAMES = 8192
LIVE_FPS = 3000.0
PEAK_RSS_MIB = 2048.0
SCRIPT_SECONDS = 8 * 60
TARGETS_MODEL = "vit-b32"
# bench/gpu.sh's steps that measure the targets (the diagnostics' steps come after them).
TARGET_STEPS = {"watch-once", "live-mass-drop", "gpu-tests", "latency"}


class Status(StrEnum):
    MET = "met"
    MISSED = "missed"
    NOT_MEASURED = "not measured"


def _figures(out: Path, name: str) -> dict[str, Any]:
    """A step's JSON; empty when its step failed, did not run, or wrote something else."""
    try:
        figures = json.loads((out / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return figures if isinstance(figures, dict) else {}


def _number(value: object) -> float | None:
    """A figure as a number; None for anything else (text, a flag, null, NaN, Infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _target(
    name: str, value: object, goal: object, *, at_least: bool, unit: str, met: bool | None = None
) -> dict[str, Any]:
    """One target's row. `met`, when given, is the step's own verdict (unrounded, or a condition
    beside the figure): it can only make the row miss, or decide it where the figures would tie."""
    figure, limit = _number(value), _number(goal)
    status = Status.NOT_MEASURED
    if figure is not None and limit is not None:
        reached = figure >= limit if at_least else figure <= limit
        status = Status.MET if reached and met is not False else Status.MISSED
    return {
        "target": name,
        "value": figure,
        "goal": limit,
        "at_least": at_least,
        "unit": unit,
        "status": status,
    }


def _watch_once_runs(once: dict[str, Any]) -> list[dict[str, Any]]:
    """Each batch size and number of lanes `watch --once` ran at, with its frames/s, the frames it
    gave a row (watch_once.py itself fails the first run unless every frame has one) and its peak
    RSS with what that was made of (anon, file, shmem: the arenas)."""
    if not once:
        return []
    rounds = once.get("rounds") or [{}]
    first = {**once, "frames_ok": once.get("frames"), "rss_at_peak_mib": rounds[0].get("rss_at_peak_mib")}
    variants = [entry for entry in once.get("variants") or [] if isinstance(entry, dict)]
    return [
        {
            "batch_size": entry.get("batch_size"),
            "gpu_lanes": entry.get("gpu_lanes"),
            "frames_per_s": _number(entry.get("watch_once_fps")),
            "frames_ok": _number(entry.get("frames_ok")),
            "peak_rss_mib": _number(entry.get("peak_rss_mib")),
            "rss_at_peak_mib": entry.get("rss_at_peak_mib"),
            "error": entry.get("error"),
        }
        for entry in [first, *variants]
    ]


def _best(runs: list[dict[str, Any]], frames: float | None) -> dict[str, Any]:
    """The fastest run that gave every frame a row within the memory budget, else the fastest that
    gave every frame a row: a speed counts with its memory and its frames."""
    whole = [
        run
        for run in runs
        if run["frames_per_s"] is not None and run["peak_rss_mib"] is not None and run["frames_ok"] == frames
    ]
    within = [run for run in whole if run["peak_rss_mib"] <= PEAK_RSS_MIB]
    return max(within or whole, key=lambda run: run["frames_per_s"], default={})


def _gpu_utilisation(out: Path) -> dict[str, float] | None:
    """Mean and peak of nvidia-smi's samples over the whole run (idle set-up included); rows it
    could not measure ("[N/A]") or cut short are left out."""
    try:
        with (out / "gpu-utilisation.csv").open(newline="") as samples:
            rows = list(csv.reader(samples))
    except OSError:
        return None
    percents = []
    for row in rows[1:]:
        if len(row) == 3 and row[1].strip().endswith("%"):
            try:
                percents.append(float(row[1].strip().removesuffix("%")))
            except ValueError:
                continue
    if not percents:
        return None
    return {"mean_percent": round(statistics.fmean(percents), 1), "peak_percent": max(percents)}


def _not_ended_well(summary: dict[str, Any]) -> dict[str, str]:
    """Each step that timed out, was stopped or failed, and how: why its figures are not measured."""
    said = {}
    for step in summary.get("steps") or []:
        if not isinstance(step, dict):
            continue
        name = str(step.get("step"))
        if step.get("timed_out"):
            said[name] = f"timed out after {step.get('limit_seconds')} s"
        elif step.get("stopped"):
            said[name] = f"stopped after {step.get('seconds')} s"
        elif step.get("exit_code"):
            said[name] = f"failed (exit {step.get('exit_code')}, see its .log)"
    return said


def verdict(out: Path) -> dict[str, Any]:
    """Every target's row, the runs behind them, and whether this run meets them all."""
    summary, once = _figures(out, "summary"), _figures(out, "watch-once")
    live, latency = _figures(out, "live-mass-drop"), _figures(out, "latency")
    runs = _watch_once_runs(once)
    best = _best(runs, _number(once.get("frames")))
    whole_live = (
        bool(live.get("all_done") and live.get("every_frame_accounted_for")) and live.get("exit_code") == 0
    )
    within_latency = latency.get("within_budget")
    # With --diagnostics, the first step carries the diagnostics' variants: not the targets' time;
    # nor where a target's step timed out or failed (it ran short, or to its limit).
    not_ended_well = _not_ended_well(summary)
    timed = summary.get("targets_seconds")
    if summary.get("diagnostics") is not False or not_ended_well.keys() & TARGET_STEPS:
        timed = None
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
            best.get("frames_ok"),
            WATCH_ONCE_MIN_FRAMES,
            at_least=True,
            unit="frames",
        ),
        # Fast but with a frame lost or counted twice, or a daemon that did not stop cleanly: missed.
        _target(
            "live daemon frames/s",
            live.get("frames_per_s"),
            LIVE_FPS,
            at_least=True,
            unit="frames/s",
            met=whole_live if live else None,
        ),
        _target("live daemon peak RSS", live.get("peak_rss_mib"), PEAK_RSS_MIB, at_least=False, unit="MiB"),
        _target(
            "single-frame latency, median",
            latency.get("median_ms"),
            latency.get("budget_ms"),
            at_least=False,
            unit="ms",
            met=within_latency if isinstance(within_latency, bool) else None,
        ),
        _target("bench/gpu.sh, the targets' seconds", timed, SCRIPT_SECONDS, at_least=False, unit="s"),
    ]
    on_a_gpu = summary.get("device") == "cuda"
    return {
        "device": summary.get("device"),
        "model": summary.get("model"),
        "machine": summary.get("machine"),
        "on_a_gpu": on_a_gpu,
        # False while gpu.sh runs, and where it was stopped part-way: the steps it did not finish
        # are not measured.
        "finished": summary.get("finished"),
        "steps_not_ended_well": not_ended_well,
        # Another process on the GPU when the run began makes its figures low (bench/gpu_preflight.py).
        "gpu_processes_at_start": summary.get("gpu_processes_at_start"),
        "all_met": on_a_gpu
        and summary.get("model") == TARGETS_MODEL
        and all(target["status"] == Status.MET for target in targets),
        "targets": targets,
        "watch_once_runs": runs,
        "best_watch_once_run": best or None,
        "gpu_utilisation": _gpu_utilisation(out),
    }


def _shown(target: dict[str, Any]) -> str:
    value = "not measured" if target["value"] is None else f"{target['value']:,.0f} {target['unit']}"
    goal = "?" if target["goal"] is None else f"{target['goal']:,.0f}"
    sign = "≥" if target["at_least"] else "≤"
    status = target["status"].upper() if target["status"] == Status.MISSED else target["status"]
    return f"{target['target']:<38} {value:>18}   goal {sign} {goal:>6}   {status}"


def _run_shown(run: dict[str, Any]) -> str:
    if run["error"]:
        return f"watch --once at batch {run['batch_size']}, {run['gpu_lanes']} lanes: failed: {run['error']}"
    parts = run["rss_at_peak_mib"] if isinstance(run["rss_at_peak_mib"], dict) else {}
    made_of = ", ".join(f"{kind} {parts[kind]:,.0f}" for kind in ("anon", "file", "shmem") if kind in parts)
    return (
        f"watch --once at batch {run['batch_size']}, {run['gpu_lanes']} lanes: "
        f"{run['frames_per_s']} frames/s, {run['frames_ok']} frames, peak RSS {run['peak_rss_mib']} MiB"
        + (f" ({made_of} MiB)" if made_of else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder bench/gpu.sh wrote")
    out = parser.parse_args().out
    if not out.is_dir():
        print(f"bench/gpu_targets.py: {out} is not a folder", file=sys.stderr)
        return 2
    result = verdict(out)
    (out / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    where = f"{result['machine']}, {result['model']}"
    if not result["on_a_gpu"] or result["model"] != TARGETS_MODEL:
        where += ": not a GPU with ViT-B/32, not the targets' figures"
    print(f"issue 14's targets on {where}")
    if result["finished"] is False:
        print(
            "  bench/gpu.sh did not run to its end (stopped, or still running): "
            "what it did not finish is not measured"
        )
    for step, said in result["steps_not_ended_well"].items():
        print(f"  step {step}: {said}")
    if result["gpu_processes_at_start"]:
        shown = "; ".join(
            f"{entry.get('pid')} {entry.get('process_name')} {entry.get('used_memory')}"
            for entry in result["gpu_processes_at_start"]
            if isinstance(entry, dict)
        )
        print(f"  warning: already on the GPU at start, the figures may be low: {shown}")
    for target in result["targets"]:
        print("  " + _shown(target))
    for run in result["watch_once_runs"]:
        print("  " + _run_shown(run))
    if result["gpu_utilisation"] is not None:
        utilisation = result["gpu_utilisation"]
        mean, peak = utilisation["mean_percent"], utilisation["peak_percent"]
        print(f"  GPU utilisation over the run: mean {mean}%, peak {peak}%")
    print("all met" if result["all_met"] else "not all met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
