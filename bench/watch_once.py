"""Frames/s of `cctv-gender watch --once`, against the research script's one-frame-at-a-time loop.

    .venv/bin/python bench/watch_once.py [--frames 200] [--width 640 --height 480] [--model vit-b32|tiny]

Three figures from one run, on the same machine, the same CLIP checkpoint (random weights, saved
and loaded with from_pretrained; `vit-b32` is the real architecture, `tiny` the test suite's
model), the same precision and the same frames (24-bit BMPs), for `--repeats` rounds; the medians
are reported (this shared VM's timings vary by ±20% from run to run):
the ceiling (bare forward on preprocessed tensors), the research script's loop, and ours
(`watch --once` in a process of its own, timed from its first scan to its last move; its peak RSS
is that process's). Prints the figures and ratios, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import MODELS, REPO, build_model

from model.clip_features import Runtime, resolve_runtime
from tests.helpers import write_bmp, write_config


def research_script_baseline(clip_dir: Path, frames: list[Path], *, runtime: Runtime) -> float:
    """The original loop: open, CLIPProcessor, forward, for one frame at a time. Returns frames/s.

    Same device and precision as ours, so the ratio measures the pipeline, not the hardware.
    """
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir, dtype=runtime.dtype).to(runtime.device).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir)
    autocast = (
        torch.autocast(device_type="cpu", dtype=runtime.autocast_dtype)
        if runtime.autocast_dtype is not None
        else contextlib.nullcontext()
    )
    started = time.perf_counter()
    for path in frames:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad(), autocast:
            model.get_image_features(pixel_values=inputs["pixel_values"].to(runtime.device, runtime.dtype))
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return len(frames) / (time.perf_counter() - started)


def ceiling(clip_dir: Path, *, runtime: Runtime, batch_size: int, batches: int) -> float:
    """The bare CLIP image forward on already-preprocessed tensors, at the batch size: frames/s."""
    import torch

    from model.clip_features import ClipFeatureExtractor

    extractor = ClipFeatureExtractor(str(clip_dir), runtime=runtime)
    pixels = torch.randn(batch_size, 3, 224, 224).to(runtime.device, runtime.dtype)
    extractor.embed_pixels(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        extractor.embed_pixels(pixels)  # returns numpy: the device work is finished
    return batch_size * batches / (time.perf_counter() - started)


def ours(config_path: Path) -> dict[str, float]:
    """`watch --once` in a fresh process (see `measure_watch_once`): frames/s, frames, peak RSS."""
    completed = subprocess.run(
        [sys.executable, __file__, "--measure-watch-once", str(config_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_watch_once(config_path: Path) -> int:
    """The child: the daemon as the command builds it, timed from the first scan to the last move."""
    from watcher.app import build_daemon
    from watcher.config import load_config

    daemon = build_daemon(load_config(config_path), stop=threading.Event())
    started = time.perf_counter()
    report = daemon.run(once=True)
    seconds = time.perf_counter() - started
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"fps": report.ok / seconds, "ok": report.ok, "peak_rss_mib": peak_rss_mib}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=MODELS, default="vit-b32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="as model.device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="auto", help="as model.precision: auto, fp32, fp16, bf16")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "watch_once.json")
    parser.add_argument("--measure-watch-once", type=Path, help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args()
    if args.measure_watch_once:
        return measure_watch_once(args.measure_watch_once)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="cctv-bench-") as scratch:
        root = Path(scratch)
        clip_dir = build_model(root / "clip", args.model)
        originals = [
            write_bmp(root / "frames" / f"{index:05d}.bmp", width=args.width, height=args.height, seed=index)
            for index in range(args.frames)
        ]
        config = write_config(
            root / "config.toml",
            {
                "model": {"clip": str(clip_dir), "device": args.device, "precision": args.precision},
                "batch": {"size": args.batch_size},
                "inbox": {"settle_ms": 0},
            },
        )
        runtime = resolve_runtime(device=args.device, precision=args.precision)
        baselines, ours_rates, ceilings, peaks = [], [], [], []
        batches = max(1, args.frames // args.batch_size)
        for _ in range(args.repeats):
            ceilings.append(ceiling(clip_dir, runtime=runtime, batch_size=args.batch_size, batches=batches))
            for folder in ("inbox", "processed", "data"):
                shutil.rmtree(root / folder, ignore_errors=True)
            (root / "inbox").mkdir()
            for path in originals:
                shutil.copyfile(path, root / "inbox" / path.name)
            baselines.append(research_script_baseline(clip_dir, originals, runtime=runtime))
            measured = ours(config)
            if measured["ok"] != args.frames:
                print(
                    f"error: watch --once processed {measured['ok']} of {args.frames} frames", file=sys.stderr
                )
                return 1
            ours_rates.append(measured["fps"])
            peaks.append(measured["peak_rss_mib"])
        baseline, ours_rate = statistics.median(baselines), statistics.median(ours_rates)
        top = statistics.median(ceilings)
    peak_rss_mib = max(peaks)
    result = {
        "frames": args.frames,
        "frame_size": f"{args.width}x{args.height}",
        "model": args.model,
        "batch_size": args.batch_size,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "repeats": args.repeats,
        "ceiling_fps": round(top, 1),
        "research_script_baseline_fps": round(baseline, 1),
        "watch_once_fps": round(ours_rate, 1),
        "research_script_baseline_fps_each": [round(rate, 1) for rate in baselines],
        "watch_once_fps_each": [round(rate, 1) for rate in ours_rates],
        "ours_over_baseline": round(ours_rate / baseline, 2),
        "ours_over_ceiling": round(ours_rate / top, 2),
        "peak_rss_mib": round(peak_rss_mib),
        "machine": f"{platform.machine()}, python {platform.python_version()}",
    }
    print(
        f"{args.frames} frames of {args.width}x{args.height}, {args.model} CLIP on {runtime.device} "
        f"({runtime.precision}), median of {args.repeats} rounds"
    )
    print(f"ceiling (bare CLIP forward, batch {args.batch_size}):        {top:8.1f} frames/s")
    print(f"research-script baseline (one frame at a time): {baseline:8.1f} frames/s")
    print(f"watch --once (end to end, batch {args.batch_size}):         {ours_rate:8.1f} frames/s")
    print(f"ours / baseline:                                {ours_rate / baseline:8.2f}x")
    print(f"ours / ceiling:                                 {ours_rate / top:8.2f}x")
    print(f"peak RSS of watch --once:                       {peak_rss_mib:8.0f} MiB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
