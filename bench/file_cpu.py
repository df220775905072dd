"""CPU time per frame of `watch --once` beyond its fixed start-up cost: the file handling's own cost.

    .venv/bin/python bench/file_cpu.py [--small 400 --large 1200] [--width 640 --height 480]

Runs `cctv-gender watch --once` (a process of its own, the tests' tiny CLIP so that the model's
share is small) over `--small` and then `--large` frames, each from a fresh inbox and database,
and takes the process's user + system CPU time from the kernel (wait4). The difference divided
by the difference in frames is the CPU a frame costs: reading, hashing, decoding, preprocessing,
claiming, the row, the move and the fsyncs. Printed beside the floor measured in the same run
(reading and hashing the same files in this process, the least any intake must do) and the
issue-14 target (2.0 ms a frame). `--baseline DIR` measures another checkout's `watch --once`
(e.g. a `git worktree` of an earlier commit) the same way in the same run, and prints the ratio.
Writes the figures as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import REPO, FrameMaker, build_model, write_config

TARGET_MS = 2.0


def _run_once(root: Path, clip: Path, frames: int, maker: FrameMaker, repo: Path = REPO) -> float:
    """CPU seconds (user + system) of one `watch --once` over `frames` frames."""
    for name in ("inbox", "processed", "failed", "data"):
        (root / name).mkdir(parents=True)
    for index in range(frames):
        maker.write(root / "inbox" / f"cam-{index % 4}" / f"{index:06d}.bmp", index)
    config = write_config(
        root / "config.toml",
        {
            "paths": {"inbox": "inbox", "processed": "processed", "failed": "failed", "data": "data"},
            "inbox": {"settle_ms": 0},
            "batch": {"size": 32, "max_wait_ms": 50},
            "model": {"clip": str(clip), "device": "cpu", "runtime": "torch", "precision": "fp32"},
            "logging": {"level": "warning"},
        },
    )
    command = [sys.executable, "-m", "watcher", "watch", "--once", "--config", str(config)]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL)  # -m: repo's watcher
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"watch --once exited with {status}")
    moved = sum(len(names) for _, _, names in os.walk(root / "processed"))
    if moved != frames:
        raise RuntimeError(f"{moved} of {frames} frames reached processed/")
    return usage.ru_utime + usage.ru_stime


def _floor_ms(root: Path) -> float:
    """CPU milliseconds a frame to read and hash the frames now in processed/."""
    paths = [Path(folder) / name for folder, _, names in os.walk(root / "processed") for name in names]
    started = time.process_time()
    for path in paths:
        hashlib.sha256(path.read_bytes()).hexdigest()
    return (time.process_time() - started) / len(paths) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cctv-file-cpu-") as temp:
        work = Path(temp)
        clip = build_model(work / "clip", "tiny")
        maker = FrameMaker(width=args.width, height=args.height)
        small = _run_once(work / "small", clip, args.small, maker)
        large = _run_once(work / "large", clip, args.large, maker)
        floor = _floor_ms(work / "large")
        baseline_ms = None
        if args.baseline is not None:
            before = [
                _run_once(work / f"baseline-{count}", clip, count, maker, repo=args.baseline.resolve())
                for count in (args.small, args.large)
            ]
            baseline_ms = (before[1] - before[0]) / (args.large - args.small) * 1000
    per_frame_ms = (large - small) / (args.large - args.small) * 1000
    figures = {
        "frames": [args.small, args.large],
        "size": f"{args.width}x{args.height}",
        "cpu_s": [round(small, 2), round(large, 2)],
        "cpu_ms_per_frame": round(per_frame_ms, 3),
        "floor_ms_per_frame": round(floor, 3),
        "ratio_to_floor": round(per_frame_ms / floor, 2),
        "target_ms_per_frame": TARGET_MS,
        "baseline_ms_per_frame": round(baseline_ms, 3) if baseline_ms is not None else None,
    }
    print(
        f"watch --once: {small:.2f} s CPU for {args.small} frames, {large:.2f} s for {args.large}: "
        f"{per_frame_ms:.2f} ms a frame ({args.width}x{args.height}); read + hash floor "
        f"{floor:.2f} ms a frame (ratio {per_frame_ms / floor:.1f}); target {TARGET_MS} ms"
    )
    if baseline_ms is not None:
        ratio = per_frame_ms / baseline_ms
        print(f"baseline {args.baseline}: {baseline_ms:.2f} ms a frame; ours / baseline {ratio:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
