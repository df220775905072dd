"""CPU time per frame of `watch --once` beyond its fixed start-up cost: the file handling's own cost.

    .venv/bin/python bench/file_cpu.py [--small 400 --large 1200] [--repeats 5] [--warm-up 1] [--baseline DIR]

Runs `cctv-gender watch --once` (a process of its own, the tests' tiny CLIP so that the model's
share is small) over `--small` and over `--large` frames, each from a fresh inbox and database,
and takes the process's user + system CPU time from the kernel (wait4). The difference divided
by the difference in frames is the CPU a frame costs: reading, hashing, decoding, preprocessing,
claiming, the row, the move and the fsyncs. The frames are flushed to disk (sync) before each
run, so the kernel's writeback of the bench's own files does not land in the daemon's figure
(`--no-sync` leaves them unflushed, as issue 14's figures of 4.2-4.8 ms were measured, though
with both inboxes of a pair written first their writeback now lands in its first run).

The difference of two whole processes carries the noise of two start-ups (imports and the
model, about 3 s of CPU that this VM runs up to 15% slower or faster from one minute to the
next: ±0.5 ms a frame over 800 frames). So both inboxes of a pair are written before either
run and the two runs follow each other within seconds; pairs alternate which runs first, so
that neither size always runs second, on a VM the other has just warmed; `--warm-up` pairs run
first and are printed, not counted (on a fresh VM the first pair's large run cost 0.6 s more
than any later one, twice in two runs of the bench); `--repeats` pairs count, and their median
is the figure.
Printed beside the floor measured in the same run (reading and hashing the same files in this
process, the least any intake must do) and the issue-14 target (2.0 ms a frame). `--baseline DIR`
measures another checkout's `watch --once` (e.g. a `git worktree` of an earlier commit) the same
way in the same run, its pairs alternating with ours, and prints the ratio. Writes the figures as
JSON with `--json`.

Each repeat also measures `--large` frames in-process (bench/daemon_cpu.py's `measure`: the
daemon built as the command builds it, the garbage collector too, its CPU from the first scan
to the last move, the file processes being none on a CPU), the steadier figure, printed beside
it with its split: CLIP's stage (the processor's resize of every 640x480 frame, its crop and
normalisation, and the tiny model), which does not shrink with the model and runs on the device
on a GPU, and the rest, the file handling.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daemon_cpu import measure_in_child
from harness import FrameMaker, build_model, checkouts, cpu_run, in_turn

TARGET_MS = 2.0


def _prepare(root: Path, clip: Path, frames: int, maker: FrameMaker, *, flush: bool) -> Path:
    """A fresh inbox of `frames` frames and its config: the daemon's defaults on a CPU."""
    return cpu_run(root, clip, frames, maker, batch={"size": 32, "max_wait_ms": 50}, flush=flush)


def _run_once(config: Path, frames: int, *, repo: Path) -> float:
    """CPU seconds (user + system) of one `watch --once` over the `frames` frames of `config`'s inbox."""
    root = config.parent
    command = [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL)  # -m: repo's watcher
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"watch --once exited with {status}")
    moved = sum(len(names) for _, _, names in os.walk(root / "processed"))
    if moved != frames:
        raise RuntimeError(f"{moved} of {frames} frames reached processed/")
    return usage.ru_utime + usage.ru_stime


def _floor_ms(root: Path, maker: FrameMaker, frames: int) -> float:
    """CPU milliseconds a frame to read and hash `frames` frames, in this process."""
    paths = [root / f"{index:06d}.bmp" for index in range(frames)]
    for index, path in enumerate(paths):
        maker.write(path, index)
    started = time.process_time()
    for path in paths:
        hashlib.sha256(path.read_bytes()).hexdigest()
    spent = time.process_time() - started
    shutil.rmtree(root)
    return spent / len(paths) * 1000


def _per_frame_ms(
    work: Path,
    clip: Path,
    maker: FrameMaker,
    counts: tuple[int, int],
    *,
    repo: Path,
    tag: str,
    flush: bool,
    large_first: bool,
) -> float:
    """CPU milliseconds a frame: one `watch --once` over each count, fresh folders each, both
    written first so that the two runs follow each other within seconds (the VM's speed drifts
    over minutes), in the order given (pairs alternate it, so that neither size always runs on a
    VM the other has just warmed)."""
    configs = {count: _prepare(work / f"{tag}-{count}", clip, count, maker, flush=flush) for count in counts}
    order = sorted(counts, reverse=large_first)
    spent = {count: _run_once(configs[count], count, repo=repo) for count in order}
    for count in counts:
        shutil.rmtree(work / f"{tag}-{count}")
    return (spent[counts[1]] - spent[counts[0]]) / (counts[1] - counts[0]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=5, help="pairs of runs; the median counts")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=1,
        metavar="PAIRS",
        help="pairs run first and not counted, for each checkout (the first costs more on a fresh VM)",
    )
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="leave the frames just written unflushed: the kernel writes both inboxes of a pair back "
        "during its first run",
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    args = parser.parse_args()
    runs, floor = _measure(args)
    figures = _report(args, runs, floor)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def _in_process_ms(
    work: Path, clip: Path, maker: FrameMaker, frames: int, *, repo: Path, tag: str, flush: bool
) -> tuple[float, float]:
    """CPU milliseconds a frame of `watch --once`'s work alone: the daemon built as the command
    builds it, its CPU from the first scan to the last move (start-up and exit left out); and
    the part of it in CLIP's stage (the thread CPU of `ClipFeatureExtractor.image_features`: the
    processor's resize, crop and normalisation and the tiny model; a last partial batch's torch
    threads beside the batch thread are not in it)."""
    root = work / f"{tag}-in-process"
    # measure_in_child refuses a run that left any frame unclassified.
    measured = measure_in_child(repo, _prepare(root, clip, frames, maker, flush=flush))
    shutil.rmtree(root)
    return float(measured["total_us"]) / 1000, float(measured["model_stage_us"]) / 1000


def _measure(args: argparse.Namespace) -> tuple[dict[str, list[float]], float]:
    """Each checkout's figures, runs alternating: by the difference of two runs, and in-process."""
    counts = (args.small, args.large)
    compared = checkouts(args.baseline)
    kinds = ("", "_in_process", "_clip_stage", "_startup", "_warm_up")
    runs: dict[str, list[float]] = {f"{name}{kind}": [] for name in compared for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="cctv-file-cpu-") as temp:
        work = Path(temp)
        clip = build_model(work / "clip", "tiny")
        maker = FrameMaker(width=args.width, height=args.height)
        floor = _floor_ms(work / "floor", maker, args.large)
        flush = not args.no_sync
        pair = functools.partial(_per_frame_ms, work, clip, maker, counts, flush=flush)
        for name, repo in compared.items():
            for warm_up in range(args.warm_up):
                warmed = pair(repo=repo, tag=f"{name}-warm-{warm_up}", large_first=False)
                runs[f"{name}_warm_up"].append(warmed)
                print(f"{name}: warm-up pair {warmed:.2f} ms a frame (not counted)", flush=True)
        for repeat in range(args.repeats):
            for name, repo in in_turn(compared, repeat):
                tag = f"{name}-{repeat}"
                runs[name].append(pair(repo=repo, tag=tag, large_first=repeat % 2 == 1))
                total, clip_stage = _in_process_ms(
                    work, clip, maker, args.large, repo=repo, tag=tag, flush=flush
                )
                runs[f"{name}_in_process"].append(total)
                runs[f"{name}_clip_stage"].append(clip_stage)
                runs[f"{name}_startup"].append(_startup_s(work, clip, maker, repo=repo, tag=tag))
    return runs, floor


def _startup_s(work: Path, clip: Path, maker: FrameMaker, *, repo: Path, tag: str) -> float:
    """CPU seconds of `watch --once` over an empty inbox: the fixed cost the pairs' difference
    leaves out (imports, the model, the database, exit)."""
    root = work / f"{tag}-empty"
    spent = _run_once(_prepare(root, clip, 0, maker, flush=False), 0, repo=repo)
    shutil.rmtree(root)
    return spent


def _report(args: argparse.Namespace, runs: dict[str, list[float]], floor: float) -> dict[str, object]:
    medians = {name: statistics.median(values) for name, values in runs.items() if values}
    per_frame_ms = medians["ours"]
    figures: dict[str, object] = {
        "frames": [args.small, args.large],
        "size": f"{args.width}x{args.height}",
        "cpu_ms_per_frame": round(per_frame_ms, 3),
        "cpu_ms_per_frame_runs": [round(value, 3) for value in runs["ours"]],
        "in_process_ms_per_frame": round(medians["ours_in_process"], 3),
        "in_process_ms_per_frame_runs": [round(value, 3) for value in runs["ours_in_process"]],
        "in_process_clip_stage_ms_per_frame": round(medians["ours_clip_stage"], 3),
        "in_process_outside_clip_ms_per_frame": round(
            medians["ours_in_process"] - medians["ours_clip_stage"], 3
        ),
        "startup_cpu_s": round(medians["ours_startup"], 3),
        "startup_cpu_s_runs": [round(value, 3) for value in runs["ours_startup"]],
        "baseline_startup_cpu_s": (
            round(medians["baseline_startup"], 3) if "baseline_startup" in medians else None
        ),
        "baseline_startup_cpu_s_runs": [round(value, 3) for value in runs.get("baseline_startup", [])],
        "warm_up_ms_per_frame_not_counted": [round(value, 3) for value in runs["ours_warm_up"]],
        "baseline_warm_up_ms_per_frame_not_counted": [
            round(value, 3) for value in runs.get("baseline_warm_up", [])
        ],
        "floor_ms_per_frame": round(floor, 3),
        "ratio_to_floor": round(per_frame_ms / floor, 2),
        "target_ms_per_frame": TARGET_MS,
        "frames_flushed_before_each_run": not args.no_sync,
        "baseline_ms_per_frame": round(medians["baseline"], 3) if "baseline" in medians else None,
        "baseline_ms_per_frame_runs": [round(value, 3) for value in runs.get("baseline", [])],
        "baseline_in_process_ms_per_frame": (
            round(medians["baseline_in_process"], 3) if "baseline_in_process" in medians else None
        ),
        "baseline_in_process_ms_per_frame_runs": [
            round(value, 3) for value in runs.get("baseline_in_process", [])
        ],
    }

    def listed(name: str) -> str:
        return ", ".join(f"{value:.2f}" for value in runs[name])

    print(
        f"watch --once over {args.small} and {args.large} frames ({args.width}x{args.height}): "
        f"{per_frame_ms:.2f} ms of CPU a frame (median of {listed('ours')}); read + hash floor "
        f"{floor:.2f} ms a frame (ratio {per_frame_ms / floor:.1f}); target {TARGET_MS} ms"
    )
    print(
        f"in-process over {args.large} frames (start-up and exit left out): "
        f"{medians['ours_in_process']:.2f} ms a frame (median of {listed('ours_in_process')}), of which "
        f"CLIP's stage (the processor's resize, crop and normalisation, the tiny model) "
        f"{medians['ours_clip_stage']:.2f} and the rest (read, hash, claim, rows, moves) "
        f"{medians['ours_in_process'] - medians['ours_clip_stage']:.2f}"
    )
    print(
        f"start-up (watch --once over an empty inbox): {medians['ours_startup']:.2f} s of CPU "
        f"(median of {listed('ours_startup')})"
    )
    if "baseline" in medians:
        print(
            f"baseline {args.baseline}: {medians['baseline']:.2f} ms a frame "
            f"(median of {listed('baseline')}); "
            f"ours / baseline {per_frame_ms / medians['baseline']:.2f}; in-process "
            f"{medians['baseline_in_process']:.2f} ms (median of {listed('baseline_in_process')}), ours / "
            f"baseline {medians['ours_in_process'] / medians['baseline_in_process']:.2f}; start-up "
            f"{medians['baseline_startup']:.2f} s (median of {listed('baseline_startup')}), ours / "
            f"baseline {medians['ours_startup'] / medians['baseline_startup']:.2f}"
        )
    return figures


if __name__ == "__main__":
    main()
