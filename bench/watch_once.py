"""Frames/s of `cctv-gender watch --once`, against the research script's one-frame-at-a-time loop
and against the bare forward of the engine it runs and of PyTorch fp32.

    .venv/bin/python bench/watch_once.py [--frames 200] [--width 640 --height 480] [--model vit-b32|tiny]
        [--runtime auto|torch|onnxruntime] [--precision auto|fp32|fp16|bf16|int8]

Three figures from one run, on the same machine, the same CLIP checkpoint (random weights, saved
and loaded with from_pretrained; `vit-b32` is the real architecture, `tiny` the test suite's
model), the same precision and the same frames (24-bit BMPs), for `--repeats` rounds:
the ceiling (bare forward on preprocessed tensors: the faster of one pass on every thread and the
daemon's lanes, see watcher.pipeline.lanes), the research script's loop, and ours (`watch --once` in a
process of its own, timed from its first scan to its last move; its peak RSS is that process's).
This shared VM's speed drifts by ±15% within minutes, so each round measures the ceiling just
before and just after ours and divides by their mean; the ratios printed are the medians of the
rounds' ratios. Prints the figures and ratios, and writes them as JSON. `--variants 256x3 256x6`
then runs `watch --once` once more at each batch size and number of lanes, on the same frames;
`--compare-switch-interval 0.5` runs it in each round at that batch.gil_switch_interval_ms too.
`--baseline DIR` runs the `watch --once` of another checkout (a `git worktree` of an earlier
commit) on the same frames in each round, between the same two ceilings, the order alternating.

The engine is chosen as the daemon chooses it (model.engine_choice, `--runtime`/`--precision` as
model.runtime/model.precision; the export and its evidence are made once, before the rounds, in a
registry kept across them). Beside the chosen engine's ceiling, each round measures PyTorch fp32's
(the old ceiling on a CPU); the run also reports the chosen engine's embeddings against torch
fp32's for the same frames (minimum cosine), and the start-up of `watch` (its daemon built and
warmed up) with the cached export against a start on torch as configured before engines existed
(`runtime = "torch"`, `precision = "auto"`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness import (
    MODELS,
    REPO,
    FrameMaker,
    build_model,
    check_measured_in,
    checkouts,
    find_py_spy,
    in_turn,
    own_memory_mib,
    write_config,
    write_json,
)
from pydantic import ValidationError

from model.clip_features import ClipFeatureExtractor
from model.engine_choice import load_engines
from model.runtime import Runtime
from model.synthetic import write_bmp
from watcher.config.sections import BatchConfig
from watcher.pipeline.lanes import GPU_LANES, lanes_for


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


def ceiling(extractor: ClipFeatureExtractor, *, batch_size: int, batches: int) -> dict[str, float]:
    """The bare CLIP image forward on already-preprocessed tensors, at the batch size: frames/s of
    one pass at a time on every thread, and of the daemon's lanes (see watcher.pipeline.lanes: on a CPU,
    one batch per thread at once, one thread each). The ceiling is the faster of the two."""
    import torch

    runtime = extractor.runtime
    pixels = torch.randn(batch_size, 3, 224, 224).to(runtime.device, runtime.dtype)
    lanes = lanes_for(extractor)

    def timed(count: int, threads: int, ready: threading.Barrier) -> tuple[float, float]:
        """Start and end (perf_counter) of `count` passes on `threads` threads, after a warm-up."""
        extractor.use_cpu_threads(threads)
        extractor.embed_pixels(pixels)  # warm-up, for this thread's thread count
        ready.wait()  # lanes start together
        started = time.perf_counter()
        for _ in range(count):
            extractor.embed_pixels(pixels)  # returns numpy: the device work is finished
        return started, time.perf_counter()

    started, ended = timed(batches, lanes.all_threads, threading.Barrier(1))
    one_pass = batch_size * batches / (ended - started)
    if not lanes.shares_cores:  # on a GPU the bare forward is one pass
        return {"one_pass": one_pass, "lanes": one_pass}
    each = max(1, batches // lanes.count)
    ready = threading.Barrier(lanes.count)
    with ThreadPoolExecutor(max_workers=lanes.count) as pool:
        spans = list(pool.map(lambda _: timed(each, lanes.threads_each, ready), range(lanes.count)))
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return {"one_pass": one_pass, "lanes": batch_size * each * lanes.count / wall}


def ours(
    config_path: Path, *, profile: Path | None = None, py_spy: str | None = None, checkout: Path = REPO
) -> dict[str, float]:
    """`watch --once` in a fresh process (see `measure_watch_once`): frames/s, frames, peak RSS.
    With `profile`, sampled by `py_spy` (every thread and process, idle ones too) into that file.
    `checkout`: the repository whose `watcher` and `model` run (`--baseline`'s, say)."""
    # Started with -c, not as this script: the daemon's file worker processes (spawned) would
    # otherwise run this script's imports (torch) again each, as the real command's never do.
    # The checkout goes first on the path: the file processes, spawned, inherit it.
    child = (
        f"import sys; sys.path[:0] = [{str(checkout)!r}, {str(Path(__file__).parent)!r}]; import watch_once; "
        f"raise SystemExit(watch_once.measure_watch_once(watch_once.Path({str(config_path)!r})))"
    )
    command = [sys.executable, "-c", child]
    if profile is not None and py_spy is not None:
        sampling = ["record", "--idle", "--threads", "--subprocesses", "--rate", "100", "--format", "raw"]
        command = [py_spy, *sampling, "--output", str(profile), "--", *command]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    # py-spy writes its own lines to the same standard output, after the child's; and exits 0
    # whatever the child did, so a child that failed shows as no figures.
    figures = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not figures:
        raise subprocess.CalledProcessError(1, command, completed.stdout, completed.stderr)
    measured: dict[str, float] = json.loads(figures[-1])
    check_measured_in(measured, checkout)
    return measured


def ours_and_baseline(
    root: Path, originals: list[Path], config: Path, baseline: Path | None, *, repeat: int
) -> dict[str, dict[str, float]]:
    """`watch --once` of this checkout and, with `baseline`, of that one on the same frames, in
    round `repeat`'s order (harness.in_turn: the VM's speed drifts within minutes)."""
    measured = {}
    for name, checkout in in_turn(checkouts(baseline), repeat):
        refill_inbox(root, originals)
        measured[name] = ours(config, checkout=checkout)
    return measured


def profiled(root: Path, originals: list[Path], config: Path, profile: Path) -> dict[str, object]:
    """One more `watch --once`, sampled by py-spy into `profile` (raw collapsed stacks, a line a
    stack with its count, threads and processes named): where a batch's time goes on the machine
    at hand. Not one of the measured rounds (sampling costs a little); its failure is recorded,
    not fatal: the figures above are the run's point."""
    py_spy = find_py_spy()
    if py_spy is None:
        return {"profile_error": "py-spy not found (pip install py-spy)"}
    refill_inbox(root, originals)
    try:
        measured = ours(config, profile=profile, py_spy=py_spy)
    except subprocess.CalledProcessError as error:
        return {"profile_error": what_failed(error)}
    except OSError as error:  # a py-spy that cannot run here
        return {"profile_error": f"cannot run {py_spy}: {error}"}
    return {
        "profile": str(profile),
        "profiled_watch_once_fps": round(measured["fps"], 1),
        "profiled_watch_once_ok": measured["ok"],
    }


def what_failed(error: subprocess.CalledProcessError) -> str:
    """A `watch --once` child that failed, for the JSON: its exit and the end of what it said."""
    said = f"{error.stdout or ''}{error.stderr or ''}"
    return f"exit {error.returncode}: {said[-1000:]}"


def min_cosine(extractor: ClipFeatureExtractor, reference: ClipFeatureExtractor, frames: list[Path]) -> float:
    """The worst frame's cosine between the two extractors' embeddings of the same BMP frames."""
    from model.images import decode_pixels

    pictures = [decode_pixels(path.read_bytes(), max_pixels=100_000_000) for path in frames]
    return float((extractor.image_features(pictures) * reference.image_features(pictures)).sum(axis=1).min())


def write_frames(folder: Path, count: int, *, width: int, height: int) -> list[Path]:
    """`count` distinct 24-bit BMPs (harness.FrameMaker: one random picture, each copy stamped
    with its index). Each made with random pixels of its own took 4.9 ms of Python on the 2-core
    VM, 8,192 of them 40 s: on a lent GPU, its minutes spent before anything was measured."""
    maker = FrameMaker(width=width, height=height)
    return [maker.write(folder / f"{index:05d}.bmp", index) for index in range(count)]


def startups(root: Path, config: Path, model: dict[str, str]) -> dict[str, float]:
    """Seconds to build and warm up the daemon (`watch`'s start) in a fresh process, on an empty
    inbox: with the engine cache made above, and on torch as configured before engines existed."""
    refill_inbox(root, [])
    cached = ours(config)["startup_seconds"]
    torch_config = write_config(
        root / "torch.toml", {"model": {**model, "runtime": "torch", "precision": "auto"}}
    )
    before = ours(torch_config)["startup_seconds"]
    return {"startup_seconds": round(cached, 2), "startup_torch_seconds": round(before, 2)}


def refill_inbox(root: Path, originals: list[Path]) -> None:
    """A fresh inbox holding `originals` again, and no outputs or database from a run before.

    The frames are hard links to the originals where the filesystem allows (a copy otherwise): the
    daemon never writes a frame, it renames, links and unlinks names, so the originals stay as
    they are. 8,192 frames of 640×480 are 7.5 GB: copied (and written back) before every
    `watch --once`, that was most of bench/gpu.sh's first step on the GPU host."""
    for folder in ("inbox", "processed", "data"):
        shutil.rmtree(root / folder, ignore_errors=True)
    (root / "inbox").mkdir()
    for path in originals:
        try:
            os.link(path, root / "inbox" / path.name)
        except OSError:
            shutil.copyfile(path, root / "inbox" / path.name)
    # Writeback of the frames (the originals' the first time) would otherwise run beside whatever
    # is measured next.
    os.sync()


def ours_on_threads(root: Path, originals: list[Path], config: Path) -> dict[str, float]:
    """`watch --once` on the same frames with the file work on threads (batch.file_processes = 0):
    the design before the file processes, measured in the same round."""
    text = re.sub(r"(?m)^file_processes = .*$", "file_processes = 0", config.read_text())
    return _ours_configured(root, originals, config.with_name("threads.toml"), text)


def ours_untraced(root: Path, originals: list[Path], config: Path) -> dict[str, float]:
    """`watch --once` on the same frames with the model stage (CLIP's image tower, the arena
    frames' preprocessing) run op by op from Python (model.traced = false, see model.traced),
    measured in the same round."""
    text = re.sub(r"(?m)^\[model\]$", "[model]\ntraced = false", config.read_text())
    return _ours_configured(root, originals, config.with_name("untraced.toml"), text)


def ours_other_switch(
    root: Path, originals: list[Path], config: Path, interval_ms: float
) -> dict[str, float]:
    """`watch --once` on the same frames at another switch interval (batch.gil_switch_interval_ms),
    measured in the same round."""
    text = re.sub(r"(?m)^\[batch\]$", f"[batch]\ngil_switch_interval_ms = {interval_ms}", config.read_text())
    return _ours_configured(root, originals, config.with_name("other-switch.toml"), text)


def variant(
    root: Path,
    originals: list[Path],
    config: Path,
    extractor: ClipFeatureExtractor,
    *,
    batch: int,
    lanes: int,
) -> dict[str, object]:
    """`watch --once` on the same frames at another batch size and number of lanes
    (batch.gpu_lanes), beside the bare forward at that batch size: one process for the frames, the
    model and the export, where a run of this script each would spend a minute of a lent GPU
    writing the same frames again. A variant that fails is recorded, not raised: one variant must
    not lose the rounds' figures."""
    text = re.sub(r"(?m)^size = .*$", f"size = {batch}", config.read_text())
    text = re.sub(r"(?m)^gpu_lanes = .*$", f"gpu_lanes = {lanes}", text)
    try:
        top = max(ceiling(extractor, batch_size=batch, batches=max(1, len(originals) // batch)).values())
        measured = _ours_configured(root, originals, config.with_name(f"b{batch}-lanes{lanes}.toml"), text)
    except subprocess.CalledProcessError as error:
        return {"batch_size": batch, "gpu_lanes": lanes, "error": what_failed(error)}
    except (OSError, RuntimeError) as error:  # the ceiling's pass (out of GPU memory, say)
        return {"batch_size": batch, "gpu_lanes": lanes, "error": str(error)}
    return {
        "batch_size": batch,
        "gpu_lanes": lanes,
        "ceiling_fps": round(top, 1),
        "watch_once_fps": round(measured["fps"], 1),
        # Frames/s counts the frames with a row: one that failed would make a run look faster.
        "frames_ok": measured["ok"],
        "ours_over_ceiling": round(measured["fps"] / top, 3),
        "peak_rss_mib": round(measured["peak_rss_mib"]),
        "rss_at_peak_mib": measured["rss_at_peak_mib"],
        "worker_peak_rss_mib": round(measured["worker_peak_rss_mib"]),
        "stage_seconds": measured["stage_seconds_summed_over_batches"],
        "watch_once_seconds": round(measured["seconds"], 2),
    }


def batch_and_lanes(text: str) -> tuple[int, int]:
    """`--variants`' BATCHxLANES, e.g. 256x6."""
    batch, _, lanes = text.partition("x")
    try:
        # As the config would take them: a variant the daemon refuses fails here, not after the rounds.
        checked = BatchConfig(size=int(batch), gpu_lanes=int(lanes))
    except (ValueError, ValidationError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not BATCHxLANES (batch.size 1-4096, batch.gpu_lanes 2-16), e.g. 256x6"
        ) from None
    return checked.size, checked.gpu_lanes


def _ours_configured(root: Path, originals: list[Path], config: Path, text: str) -> dict[str, float]:
    refill_inbox(root, originals)
    config.write_text(text)
    return ours(config)


class OwnPeak:
    """This process's memory by kind (see own_memory_mib) at its largest RSS, read every 50 ms:
    what the peak is made of (the heap, the libraries, the arenas), which the end cannot say
    (the arenas are gone by then)."""

    def __init__(self) -> None:
        self.at_peak = own_memory_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            now = own_memory_mib()
            if now.get("rss", 0.0) > self.at_peak.get("rss", 0.0):
                self.at_peak = now

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.at_peak


class WorkerPeaks:
    """The peak RSS (VmHWM) of each file worker process, read every 0.2 s until they are gone."""

    def __init__(self, pids: set[int]) -> None:
        self._peaks = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self._peaks:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self._peaks[pid] = max(self._peaks[pid], int(line.split()[1]) / 1024)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return list(self._peaks.values())


def own_peak_rss_mib() -> float:
    peak = own_memory_mib().get("peak")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def measure_watch_once(config_path: Path) -> int:
    """The child: the daemon as the command builds it, timed from the first scan to the last move."""
    import watcher
    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon

    own_peak = OwnPeak()
    building = time.perf_counter()
    daemon = build_daemon(load_config(config_path), stop=threading.Event())
    startup_seconds = time.perf_counter() - building
    after_startup = own_memory_mib()
    file_workers = daemon.file_workers
    workers = WorkerPeaks(file_workers.pids if file_workers else set())
    started = time.perf_counter()
    report = daemon.run(once=True)
    seconds = time.perf_counter() - started
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent at fork and
    # exec, so a child would report this script's own peak (which holds every engine) as its own.
    peak_rss_mib = own_peak_rss_mib()
    worker_rss_mib = workers.stop()
    stages = {stage: round(total, 2) for stage, total in report.stage_seconds.items()}
    print(
        json.dumps(
            {
                "watcher": str(Path(watcher.__file__).parent),
                "fps": report.ok / seconds if seconds > 0 else 0.0,
                "startup_seconds": startup_seconds,
                "ok": report.ok,
                "seconds": seconds,
                "peak_rss_mib": peak_rss_mib,
                # What the peak is made of: after start-up (model loaded, arenas pinned) and when
                # the RSS was largest; anon is the heap, file the libraries mapped, shmem the arenas.
                "rss_after_startup_mib": after_startup,
                "rss_at_peak_mib": own_peak.stop(),
                "file_processes": file_workers.count if file_workers else 0,
                "worker_peak_rss_mib": max(worker_rss_mib, default=0.0),
                "workers_peak_rss_mib_summed": sum(worker_rss_mib),
                "stage_seconds_summed_over_batches": stages,
            }
        )
    )
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
    parser.add_argument("--runtime", default="auto", help="as model.runtime: auto, torch, onnxruntime")
    parser.add_argument(
        "--precision", default="auto", help="as model.precision: auto, fp32, fp16, bf16, int8"
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "watch_once.json")
    parser.add_argument(
        "--baseline-frames", type=int, default=None, help="frames for the research loop (default: all)"
    )
    parser.add_argument(
        "--file-processes", default="auto", help="as batch.file_processes: auto (the default), or N"
    )
    parser.add_argument(
        "--gpu-lanes", type=int, default=GPU_LANES, help="as batch.gpu_lanes (3, the default)"
    )
    parser.add_argument(
        "--compare-threads",
        action="store_true",
        help="also run watch --once with batch.file_processes = 0 (file work on threads) in each round",
    )
    parser.add_argument(
        "--compare-untraced",
        action="store_true",
        help="also run watch --once with model.traced = false (the model stage op by op) in each round",
    )
    parser.add_argument(
        "--compare-switch-interval",
        type=float,
        default=None,
        metavar="MS",
        help="also run watch --once at this batch.gil_switch_interval_ms in each round (0.5, say)",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        type=batch_and_lanes,
        default=[],
        metavar="BATCHxLANES",
        help="after the rounds, watch --once once more for each, e.g. 256x3 256x6, on the same frames",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="after the rounds, one more watch --once sampled by py-spy (all threads and processes) into it",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run watch --once of another checkout (a git worktree) on the same frames in each round",
    )
    parser.add_argument("--measure-watch-once", type=Path, help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args()
    if args.measure_watch_once:
        return measure_watch_once(args.measure_watch_once)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="cctv-bench-") as scratch:
        root = Path(scratch)
        clip_dir = build_model(root / "clip", args.model)
        writing = time.perf_counter()
        originals = write_frames(root / "frames", args.frames, width=args.width, height=args.height)
        frames_written_seconds = time.perf_counter() - writing
        # The engines' embeddings are compared on pictures that differ throughout, not on copies
        # of one picture (the frames above).
        distinct = [
            write_bmp(
                root / "distinct" / f"{index:05d}.bmp", width=args.width, height=args.height, seed=index
            )
            for index in range(min(args.batch_size, args.frames))
        ]
        registry = root / "registry"  # outside data/, which each round empties: the export is kept
        model = {"clip": str(clip_dir), "device": args.device, "registry": str(registry)}
        config = write_config(
            root / "config.toml",
            {
                "model": {**model, "runtime": args.runtime, "precision": args.precision},
                "batch": {
                    "size": args.batch_size,
                    "file_processes": args.file_processes
                    if args.file_processes == "auto"
                    else int(args.file_processes),
                    "gpu_lanes": args.gpu_lanes,
                },
                "inbox": {"settle_ms": 0},
            },
        )
        # Exported, gated and measured here, once: every `watch --once` below starts from the cache.
        engines = load_engines(
            str(clip_dir),
            device=args.device,
            engine=args.runtime,
            precision=args.precision,
            cache_root=registry,
        )
        extractor = engines.chosen
        runtime = extractor.runtime
        reference = engines.passing.get("torch-fp32") or ClipFeatureExtractor(
            str(clip_dir), runtime=Runtime(device=runtime.device, precision="fp32")
        )
        cosine = min_cosine(extractor, reference, distinct)
        startup = startups(root, config, model)
        evidence = [json.loads(path.read_text()) for path in registry.glob(".engines/*/evidence-*.json")]
        batches = max(1, args.frames // args.batch_size)
        rounds = []
        for repeat in range(args.repeats):
            before = ceiling(extractor, batch_size=args.batch_size, batches=batches)
            torch_before = ceiling(reference, batch_size=args.batch_size, batches=batches)
            both = ours_and_baseline(root, originals, config, args.baseline, repeat=repeat)
            measured, checkout_baseline = both["ours"], both.get("baseline")
            if measured["ok"] != args.frames:
                print(
                    f"error: watch --once processed {measured['ok']} of {args.frames} frames", file=sys.stderr
                )
                return 1
            threads = ours_on_threads(root, originals, config) if args.compare_threads else None
            untraced = ours_untraced(root, originals, config) if args.compare_untraced else None
            other_switch = (
                ours_other_switch(root, originals, config, args.compare_switch_interval)
                if args.compare_switch_interval is not None
                else None
            )
            after = ceiling(extractor, batch_size=args.batch_size, batches=batches)
            torch_after = ceiling(reference, batch_size=args.batch_size, batches=batches)
            baseline = research_script_baseline(
                clip_dir, originals[: args.baseline_frames], runtime=reference.runtime
            )
            top = (max(before.values()) + max(after.values())) / 2
            torch_top = (max(torch_before.values()) + max(torch_after.values())) / 2
            rounds.append(
                {
                    "ceiling_fps": round(top, 1),
                    "torch_fp32_ceiling_fps": round(torch_top, 1),
                    "ceiling_over_torch_fp32": round(top / torch_top, 3),
                    "ours_over_torch_fp32_ceiling": round(measured["fps"] / torch_top, 3),
                    "ceiling_one_pass_fps": round((before["one_pass"] + after["one_pass"]) / 2, 1),
                    "ceiling_lanes_fps": round((before["lanes"] + after["lanes"]) / 2, 1),
                    "research_script_baseline_fps": round(baseline, 1),
                    "watch_once_fps": round(measured["fps"], 1),
                    "ours_over_ceiling": round(measured["fps"] / top, 3),
                    "ours_over_baseline": round(measured["fps"] / baseline, 3),
                    "peak_rss_mib": round(measured["peak_rss_mib"]),
                    "rss_after_startup_mib": measured["rss_after_startup_mib"],
                    "rss_at_peak_mib": measured["rss_at_peak_mib"],
                    "file_processes": measured["file_processes"],
                    "worker_peak_rss_mib": round(measured["worker_peak_rss_mib"]),
                    "workers_peak_rss_mib_summed": round(measured["workers_peak_rss_mib_summed"]),
                    "stage_seconds": measured["stage_seconds_summed_over_batches"],
                    "watch_once_seconds": round(measured["seconds"], 2),
                    **(
                        {
                            "baseline_checkout_fps": round(checkout_baseline["fps"], 1),
                            "ours_over_baseline_checkout": round(
                                measured["fps"] / checkout_baseline["fps"], 3
                            ),
                            "baseline_checkout_over_ceiling": round(checkout_baseline["fps"] / top, 3),
                            "baseline_checkout_stage_seconds": checkout_baseline[
                                "stage_seconds_summed_over_batches"
                            ],
                        }
                        if checkout_baseline
                        else {}
                    ),
                    **(
                        {
                            "watch_once_file_threads_fps": round(threads["fps"], 1),
                            "ours_over_file_threads": round(measured["fps"] / threads["fps"], 3),
                            "file_threads_stage_seconds": threads["stage_seconds_summed_over_batches"],
                        }
                        if threads
                        else {}
                    ),
                    **(
                        {
                            "other_switch_interval_ms": args.compare_switch_interval,
                            "watch_once_other_switch_fps": round(other_switch["fps"], 1),
                            "ours_over_other_switch": round(measured["fps"] / other_switch["fps"], 3),
                            "other_switch_stage_seconds": other_switch["stage_seconds_summed_over_batches"],
                        }
                        if other_switch
                        else {}
                    ),
                    **(
                        {
                            "watch_once_untraced_fps": round(untraced["fps"], 1),
                            "ours_over_untraced": round(measured["fps"] / untraced["fps"], 3),
                            "untraced_stage_seconds": untraced["stage_seconds_summed_over_batches"],
                        }
                        if untraced
                        else {}
                    ),
                }
            )

        def summarise(variants: list[dict[str, Any]], profile: dict[str, object]) -> dict[str, Any]:
            return _summary(args, rounds, variants, profile, runtime=runtime, extractor=extractor, seen=seen)

        seen = {
            "min_cosine_to_torch_fp32": round(cosine, 5),
            "frames_written_seconds": round(frames_written_seconds, 1),
            **startup,
            # The first start's gate and bare forward (batch 16, every thread) of each engine tried.
            "engine_evidence": evidence[0]["engines"] if evidence else {},
        }
        # Written as each part ends, not only at the end: a run stopped by its time limit (a GPU
        # lease's) keeps the rounds and the variants it finished.
        variants: list[dict[str, Any]] = []
        write_json(
            args.json, {**summarise(variants, {}), "partial": "the rounds, no variant yet"}, quietly=True
        )
        for batch_size, lane_count in args.variants:
            variants.append(variant(root, originals, config, extractor, batch=batch_size, lanes=lane_count))
            done = f"the rounds, {len(variants)} of {len(args.variants)} variants"
            write_json(args.json, {**summarise(variants, {}), "partial": done}, quietly=True)
        profile = profiled(root, originals, config, args.profile) if args.profile else {}
        result = summarise(variants, profile)
    _print_summary(args, result, runtime=runtime, variants=variants)
    write_json(args.json, result)
    return 0


def _summary(
    args: argparse.Namespace,
    rounds: list[dict[str, Any]],
    variants: list[dict[str, Any]],
    profile: dict[str, object],
    *,
    runtime: Runtime,
    extractor: ClipFeatureExtractor,
    seen: dict[str, Any],
) -> dict[str, Any]:
    """What the JSON says: the rounds' medians, the variants, and what was seen on the way."""

    def median(key: str) -> float:
        return statistics.median(entry[key] for entry in rounds)

    lanes = lanes_for(extractor, gpu_lanes=args.gpu_lanes)
    return {
        "frames": args.frames,
        "frame_size": f"{args.width}x{args.height}",
        "model": args.model,
        "batch_size": args.batch_size,
        "device": str(runtime.device),
        "engine": runtime.tag,
        "precision": runtime.precision,
        "min_cosine_to_torch_fp32": seen["min_cosine_to_torch_fp32"],
        "frames_written_seconds": seen["frames_written_seconds"],
        **{key: value for key, value in seen.items() if key.startswith("startup")},
        "lanes": lanes.count,
        "gpu_lanes": args.gpu_lanes,
        "threads_per_lane": lanes.threads_each,
        "repeats": args.repeats,
        **{
            key: median(key)
            for key in (
                "ceiling_fps",
                "torch_fp32_ceiling_fps",
                "ceiling_over_torch_fp32",
                "ours_over_torch_fp32_ceiling",
                "ceiling_one_pass_fps",
                "ceiling_lanes_fps",
                "research_script_baseline_fps",
                "watch_once_fps",
                "ours_over_ceiling",
                "ours_over_baseline",
                *(
                    ("baseline_checkout_fps", "ours_over_baseline_checkout", "baseline_checkout_over_ceiling")
                    if args.baseline
                    else ()
                ),
                *(("watch_once_file_threads_fps", "ours_over_file_threads") if args.compare_threads else ()),
                *(("watch_once_untraced_fps", "ours_over_untraced") if args.compare_untraced else ()),
                *(
                    ("watch_once_other_switch_fps", "ours_over_other_switch")
                    if args.compare_switch_interval is not None
                    else ()
                ),
            )
        },
        "peak_rss_mib": max(entry["peak_rss_mib"] for entry in rounds),
        **profile,
        "engine_evidence": seen["engine_evidence"],
        "rounds": rounds,
        "variants": variants,
        "machine": f"{platform.machine()}, python {platform.python_version()}",
    }


def _print_summary(
    args: argparse.Namespace, result: dict[str, Any], *, runtime: Runtime, variants: list[dict[str, Any]]
) -> None:
    lanes = SimpleNamespace(count=result["lanes"], threads_each=result["threads_per_lane"])
    print(
        f"{args.frames} frames of {args.width}x{args.height}, {args.model} CLIP on {runtime.device} "
        f"({runtime.tag}), {lanes.count} lane(s) of {lanes.threads_each} thread(s), "
        f"median of {args.repeats} rounds"
    )
    batch = args.batch_size
    lines = [
        (
            f"ceiling, one pass on every thread (batch {batch})",
            f"{result['ceiling_one_pass_fps']:8.1f} frames/s",
        ),
        (f"ceiling, the daemon's lanes (batch {batch})", f"{result['ceiling_lanes_fps']:8.1f} frames/s"),
        (
            "research-script baseline (one frame at a time)",
            f"{result['research_script_baseline_fps']:8.1f} frames/s",
        ),
        (f"watch --once (end to end, batch {batch})", f"{result['watch_once_fps']:8.1f} frames/s"),
        ("ours / baseline", f"{result['ours_over_baseline']:8.2f} x"),
        ("ours / ceiling (the faster of the two)", f"{result['ours_over_ceiling']:8.2f} x"),
        ("PyTorch fp32 ceiling (the old one)", f"{result['torch_fp32_ceiling_fps']:8.1f} frames/s"),
        (f"ceiling ({runtime.tag}) / PyTorch fp32 ceiling", f"{result['ceiling_over_torch_fp32']:8.2f} x"),
        ("ours / PyTorch fp32 ceiling", f"{result['ours_over_torch_fp32_ceiling']:8.2f} x"),
        (f"min cosine, {runtime.tag} to torch fp32 embeddings", f"{result['min_cosine_to_torch_fp32']:8.5f}"),
        (f"{args.frames} frames written, before the rounds", f"{result['frames_written_seconds']:8.1f} s"),
        ("start-up, cached export (build + warm-up)", f"{result['startup_seconds']:8.2f} s"),
        ("start-up, torch as before engines", f"{result['startup_torch_seconds']:8.2f} s"),
        ("peak RSS of watch --once", f"{result['peak_rss_mib']:8.1f} MiB"),
    ]
    if args.baseline:
        lines.append((f"watch --once of {args.baseline}", f"{result['baseline_checkout_fps']:8.1f} frames/s"))
        lines.append(("  its / ceiling", f"{result['baseline_checkout_over_ceiling']:8.2f} x"))
        lines.append(("ours / its", f"{result['ours_over_baseline_checkout']:8.2f} x"))
    if args.compare_threads:
        lines.append(("ours / ours with file work on threads", f"{result['ours_over_file_threads']:8.2f} x"))
    if args.compare_untraced:
        lines.append(("ours / ours with the model stage op by op", f"{result['ours_over_untraced']:8.2f} x"))
    if args.compare_switch_interval is not None:
        lines.append(
            (
                f"ours / ours at a {args.compare_switch_interval:g} ms switch interval",
                f"{result['ours_over_other_switch']:8.2f} x",
            )
        )
    for entry in variants:
        label = f"watch --once, batch {entry['batch_size']}, {entry['gpu_lanes']} lanes"
        if "error" in entry:
            lines.append((label, "failed (see the JSON)"))
            continue
        lines.append((label, f"{entry['watch_once_fps']:8.1f} frames/s"))
        lines.append(("  ours / ceiling", f"{entry['ours_over_ceiling']:8.2f} x"))
        lines.append(("  peak RSS", f"{entry['peak_rss_mib']:8.1f} MiB"))
    for tag, entry in result["engine_evidence"].items():
        speed = f"{entry['frames_per_second']:.1f} frames/s" if entry["frames_per_second"] else "not timed"
        lines.append((f"first start: {tag} (gate cosine {entry['min_cosine']:.5f})", f"{speed:>15s}"))
    for label, figure in lines:
        print(f"{label + ':':50s} {figure}")


if __name__ == "__main__":
    raise SystemExit(main())
