"""A flood: N small frames dropped at once, drained by `watch --once`; peak RSS and open files.

    .venv/bin/python bench/flood.py [--frames 20000] [--model tiny|vit-b32]

Prints frames/s, peak RSS of the whole process and the most file descriptors it held at once
(sampled every 10 ms), and writes them as JSON. Every frame must end with one row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from harness import MODELS, REPO, build_model, write_config

from model.synthetic import bmp_bytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "flood.json")
    args = parser.parse_args()

    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon

    with tempfile.TemporaryDirectory(prefix="cctv-flood-") as scratch:
        root = Path(scratch)
        clip = build_model(root / "clip", args.model)
        frame = bmp_bytes(width=64, height=48)
        for index in range(args.frames):
            folder = root / "inbox" / f"cam-{index % 16:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:06d}.bmp").write_bytes(frame)
        config = write_config(root / "config.toml", {"model": {"clip": str(clip)}, "inbox": {"settle_ms": 0}})

        most_fds, done = 0, threading.Event()

        def sample_fds() -> None:
            nonlocal most_fds
            while not done.is_set():
                most_fds = max(most_fds, len(os.listdir("/proc/self/fd")))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample_fds, daemon=True)
        sampler.start()
        daemon = build_daemon(load_config(config), stop=threading.Event())
        started = time.perf_counter()
        report = daemon.run(once=True)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        with sqlite3.connect(root / "data" / "results.sqlite3") as connection:
            rows = connection.execute("SELECT count(*) FROM results").fetchone()[0]

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "frames": args.frames,
        "model": args.model,
        "rows": rows,
        "ok": report.ok,
        "seconds": round(seconds, 1),
        "frames_per_s": round(args.frames / seconds, 1),
        "peak_rss_mib": round(peak_rss_mib),
        "most_open_fds": most_fds,
    }
    print(f"{args.frames} frames of 64x48 dropped at once, {args.model} CLIP")
    print(f"drained in {seconds:.1f} s ({args.frames / seconds:.1f} frames/s), {rows} rows")
    print(f"peak RSS {peak_rss_mib:.0f} MiB, at most {most_fds} open file descriptors")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if rows == args.frames == report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
