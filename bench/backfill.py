"""Backfill throughput: `cctv-gender backfill ARCHIVE` in-process vs `--ray local`, same archive.

    .venv/bin/python bench/backfill.py [--frames 2000] [--model vit-b32|tiny] [--actors 1]

Writes an archive of 640×480 BMPs in 8 camera folders, then backfills it twice, each into a fresh
SQLite database of its own (nothing is skipped as already done): first in this machine's process
(the daemon's decode threads and model), then on a local Ray (read tasks and a model actor pool).
Each run is the whole command as a user runs it, model load and Ray start included. Prints both
frames/s, the ratio Ray ÷ in-process (target ≥ 0.8 for ≥ 2,000 frames), Ray's overhead per frame,
and checks both databases hold one row per file; writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import MODELS, REPO, FrameMaker, build_model, write_config

CAMERAS = 8
_SUMMARY = re.compile(
    r"backfill: (\d+) files, (\d+) ok, (\d+) failed, (\d+) skipped as already done, ([\d.]+) frames/s"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--model", choices=MODELS, default="vit-b32")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--actors", type=int, default=None, help="--actors for the Ray run (default: its own)"
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "backfill.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cctv-backfill-", dir=REPO / "bench") as scratch:
        root = Path(scratch)
        clip = build_model(root / "clip", args.model)
        frames = FrameMaker(width=640, height=480)
        for index in range(args.frames):
            frames.write(root / "archive" / f"cam-{index % CAMERAS:02d}" / f"{index:06d}.bmp", index)
        print(f"{args.frames} frames of 640×480 in {root / 'archive'}; {os.cpu_count()} CPUs", flush=True)
        figures = {}
        for name, extra in (
            ("in-process", []),
            ("ray-local", ["--ray", "local", *(["--actors", str(args.actors)] if args.actors else [])]),
        ):
            run = root / name
            run.mkdir()
            config = write_config(
                run / "config.toml",
                {
                    "paths": {key: str(run / key) for key in ("inbox", "processed", "failed", "data")},
                    "model": {"clip": str(clip), "device": "cpu"},
                    "batch": {"size": args.batch_size},
                },
            )
            figures[name] = _backfill(root / "archive", config, extra, frames=args.frames)
            print(f"{name:>10}: {figures[name]['frames_per_s']:.1f} frames/s end to end "
                  f"({figures[name]['wall_s']:.1f} s)", flush=True)  # fmt: skip
    local, ray = figures["in-process"], figures["ray-local"]
    ratio = ray["frames_per_s"] / local["frames_per_s"]
    overhead_ms = (ray["wall_s"] - local["wall_s"]) / args.frames * 1000
    print(f"ray ÷ in-process: {ratio:.2f} (target ≥ 0.80); Ray's overhead {overhead_ms:.1f} ms per frame")
    result = {"frames": args.frames, "model": args.model, "cpus": os.cpu_count(), **figures,
              "ray_over_in_process": round(ratio, 3),
              "ray_overhead_ms_per_frame": round(overhead_ms, 2)}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _backfill(archive: Path, config: Path, extra: list[str], *, frames: int) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "backfill", str(archive), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    match = _SUMMARY.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(
            f"backfill failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    database = config.parent / "data" / "results.sqlite3"
    with sqlite3.connect(database) as connection:
        (rows, paths) = connection.execute(
            "SELECT count(*), count(DISTINCT source_path) FROM results"
        ).fetchone()
    if rows != frames or paths != frames:
        raise SystemExit(f"expected {frames} rows, one per file; found {rows} rows for {paths} files")
    return {
        "wall_s": round(wall, 2),
        "frames_per_s": round(frames / wall, 2),
        "reported_frames_per_s": float(match[5]),
    }


if __name__ == "__main__":
    sys.exit(main())
