"""Scaling out: total frames/s of one, two and three daemons sharing an inbox and a PostgreSQL database.

    .venv/bin/python bench/scale_out.py [--frames 2000] [--daemons 1,2,3] [--model tiny|vit-b32]
                                        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]

For each count: a fresh schema in the database and a fresh inbox; the daemons start (each a process
of its own, as systemd would run them on several hosts) and are all ready before the frames arrive,
moved into the inbox as whole camera folders at once. Timed from that moment to the last row
committed and the last file moved. Then every frame must have exactly one row. Prints frames/s per
count and the ratio to one daemon, and writes them as JSON.

On a 2-core machine the CPU caps the total: the point is that adding daemons costs nothing in
correctness and nothing serialises them on a lock. With `tiny` (default) file handling dominates;
with `vit-b32` the model does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from harness import (
    MODELS,
    REPO,
    DaemonProcess,
    FrameMaker,
    build_model,
    files_under,
    write_config,
    write_json,
)
from sqlalchemy import create_engine, text

CAMERAS = 8


def run_count(root: Path, clip: Path, *, daemons: int, frames: int, server: str, maker: FrameMaker) -> dict:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"
    work = root / f"daemons-{daemons}"
    try:
        for folder in ("inbox", "processed", "failed", "staging"):
            (work / folder).mkdir(parents=True)
        for index in range(frames):
            maker.write(work / "staging" / f"cam-{index % CAMERAS:02d}" / f"{index:06d}.bmp", index)
        processes = []
        for number in range(daemons):
            config = write_config(
                work / f"config-{number}.toml",
                {
                    "paths": {
                        "inbox": str(work / "inbox"),
                        "processed": str(work / "processed"),
                        "failed": str(work / "failed"),
                        "data": str(work / f"data-{number}"),  # per host in real life
                    },
                    # Daemons on one host split its cores (see model.cpu_threads).
                    "model": {"clip": str(clip), "cpu_threads": max(1, (os.cpu_count() or 1) // daemons)},
                    "database": {"url": url},
                    "inbox": {"settle_ms": 200},
                },
            )
            processes.append(
                DaemonProcess(config, data=work / f"data-{number}", log=work / f"daemon-{number}.log")
            )
        try:
            for process in processes:
                process.wait_ready()
            started = time.perf_counter()
            for camera in sorted((work / "staging").iterdir()):
                camera.rename(work / "inbox" / camera.name)
            engine = create_engine(url)
            while True:
                with engine.connect() as connection:
                    rows = connection.execute(text("SELECT count(*) FROM results")).scalar_one()
                if rows >= frames and len(files_under(work / "processed")) >= frames:
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            with engine.connect() as connection:
                distinct = connection.execute(
                    text("SELECT count(DISTINCT source_path) FROM results")
                ).scalar_one()
                per_instance = connection.execute(
                    text("SELECT name, frames_ok FROM instances ORDER BY name")
                ).all()
            engine.dispose()
        finally:
            codes = [process.stop() for process in processes]
        return {
            "daemons": daemons,
            "frames": frames,
            "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 1),
            "rows": rows,
            "distinct_frames": distinct,
            "exit_codes": codes,
            "exactly_once": rows == distinct == frames and all(code == 0 for code in codes),
            # From the heartbeats, which lag by up to one interval: a rough split of the work.
            "split": {name: done for name, done in per_instance},
        }
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--daemons", default="1,2,3", help="comma-separated daemon counts")
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "scale_out.json")
    args = parser.parse_args()

    counts = [int(part) for part in args.daemons.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="cctv-scale-", dir=REPO / "bench") as scratch:
        root = Path(scratch)
        clip = build_model(root / "clip", args.model)
        maker = FrameMaker(width=args.width, height=args.height)
        for daemons in counts:
            result = run_count(
                root, clip, daemons=daemons, frames=args.frames, server=args.postgres, maker=maker
            )
            results.append(result)
            print(
                f"{daemons} daemon(s): {args.frames} frames in {result['seconds']:.1f} s = "
                f"{result['frames_per_s']:.1f} frames/s; exactly once: {result['exactly_once']}",
                flush=True,
            )
    base = results[0]["frames_per_s"]
    for result in results:
        result["over_one_daemon"] = round(result["frames_per_s"] / base, 2)
    print(f"{args.model} CLIP, {args.width}x{args.height}, one PostgreSQL database, one inbox:")
    for result in results:
        print(
            f"  {result['daemons']} daemon(s): {result['frames_per_s']:8.1f} frames/s "
            f"({result['over_one_daemon']:.2f}x)"
        )
    write_json(args.json, {"model": args.model, "runs": results})
    return 0 if all(result["exactly_once"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
