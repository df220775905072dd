"""The daemon's own CPU a frame outside the model, in a GPU's shape: what caps frames/s on a GPU.

    .venv/bin/python bench/daemon_cpu.py [--frames 2048] [--repeats 3] [--baseline DIR] [--json FILE]

On a GPU the model runs on the device and the file work on the file processes, so what is left
in the daemon process (its loop, claiming hand-offs, pickling to and from the workers, placing,
the rows, the moves' hand-off) is Python that holds the GIL in turn on every thread: it is the
serial part, and it bounds frames/s at one over it (issue 14: 5,000 frames/s leaves 200 µs a
frame). It can be measured on any machine: `watch --once` in a process of its own, shaped as on a
GPU (file processes on, batch 128; the tests' tiny CLIP on the CPU), over `--frames` frames
(160×120 by default: see `--width`); the daemon process's own CPU from the first scan to the last
move (getrusage: the file processes are other processes, not in it) minus the thread CPU of CLIP
(`ClipFeatureExtractor.image_features`; with one model thread the forward runs on the batch's own
thread), per frame: the head and each frame's result count as the daemon's own. On a CPU the
CLIP stage also resizes the frames, which a GPU does on the device: it is left out either way. A
GPU's kernel launches hold the GIL too, and are not in the figure. Each thread's share is printed
too, and the model stage's wall-clock time a frame beside its CPU: a stage run op by op from
Python waits for the GIL between its operations while the daemon's other threads run (see
bench/gil_convoy.py), and the frames/s of the run. `--baseline DIR` measures another checkout
(e.g. a `git worktree` of an earlier commit) the same way in the same run, runs alternating.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import FrameMaker, build_model, checkouts, cpu_run, in_turn, measured_in_checkout

BUDGET_US = 200.0  # issue 14's 5,000 frames/s
BATCH = 128


def _prepare(
    root: Path,
    clip: Path,
    frames: int,
    maker: FrameMaker,
    processes: int,
    *,
    gpu_lanes: int | None = None,
) -> Path:
    lanes = {} if gpu_lanes is None else {"gpu_lanes": gpu_lanes}
    return cpu_run(
        root,
        clip,
        frames,
        maker,
        # Only full batches: a partial one would run alone on every thread, its model work off
        # the lane threads that the model stage is timed on.
        batch={"size": BATCH, "max_wait_ms": 600_000, "file_processes": processes} | lanes,
        # One model thread: every forward on the batch thread that the model stage is timed on
        # (with more, torch's own threads would do part of it out of that stage's sight).
        model={"cpu_threads": 1},
    )


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Each thread of this process: its name and CPU seconds so far (from /proc)."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc/self/task").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        tid = int(entry.name)
        name = names.get(tid, stat[stat.index("(") + 1 : stat.rindex(")")])
        found[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)  # utime + stime
    return found


class _ThreadWatch:
    """The CPU of every thread that lived during the run, read every 20 ms (threads end with it)."""

    def __init__(self) -> None:
        self._start = _thread_cpu()
        self._last = dict(self._start)
        self._done = threading.Event()
        self.own_seconds = 0.0  # this watcher's CPU: the process's, not the daemon's
        self._thread = threading.Thread(target=self._watch, name="bench-thread-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            self._last.update(_thread_cpu())
        self.own_seconds = time.thread_time()

    def stop(self) -> dict[str, float]:
        """CPU seconds by thread name (threads of one name summed), this watcher left out."""
        self._done.set()
        self._thread.join()
        self._last.update(_thread_cpu())
        spent: dict[str, float] = {}
        for tid, (name, seconds) in self._last.items():
            if name != self._thread.name:
                kind = name.rstrip("0123456789_")
                spent[kind] = spent.get(kind, 0.0) + seconds - self._start.get(tid, (name, 0.0))[1]
        return spent


def measure(
    config_path: Path, *, live: bool = False, stand_in_gpu: tuple[float, float] | None = None
) -> dict[str, Any]:
    """The child: the daemon as the command builds it, its own CPU outside the model stage; with
    `live`, as `watch` runs (inotify on the inbox), until the last waiting frame has its outcome;
    with `stand_in_gpu` (model and copy ms per 128 frames), shaped as on a GPU of that speed (see
    _as_on_a_stand_in_gpu).
    The garbage collector as `watch` has it: off while the daemon is built, then start-up's
    objects frozen and the collector on."""
    gc.disable()
    from model.clip_features import ClipFeatureExtractor
    from watcher.config import load_config
    from watcher.pipeline.assembly import build_daemon

    if stand_in_gpu is not None:
        _as_on_a_stand_in_gpu(*stand_in_gpu)

    model_seconds = [0.0]
    model_wall_seconds = [0.0]  # beside its CPU: what it waited for (the GIL, among others)
    counting = threading.Lock()
    image_features = ClipFeatureExtractor.image_features

    def timed_image_features(self: Any, *args: Any, **kwargs: Any) -> Any:
        started, started_wall = time.thread_time(), time.perf_counter()
        try:
            return image_features(self, *args, **kwargs)
        finally:
            with counting:
                model_seconds[0] += time.thread_time() - started
                model_wall_seconds[0] += time.perf_counter() - started_wall

    # CLIP only: the head and the batch's per-frame results count as the daemon's own work.
    ClipFeatureExtractor.image_features = timed_image_features  # type: ignore[method-assign]
    waiting = sum(1 for _ in (config_path.parent / "inbox").rglob("*.bmp"))
    stop = threading.Event()
    daemon = build_daemon(load_config(config_path), stop=stop)
    gc.freeze()
    gc.enable()
    threads = _ThreadWatch()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    report = _run_live(daemon, stop, waiting) if live else daemon.run(once=True)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    by_thread = threads.stop()
    spent = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) - threads.own_seconds
    if report.ok != waiting:
        raise RuntimeError(f"{report.ok} of {waiting} frames classified ({report.failed} failed)")
    frames = report.ok
    return {
        "frames": report.ok,
        "outside_model_us": (spent - model_seconds[0]) / frames * 1e6,
        "total_us": spent / frames * 1e6,
        "model_stage_us": model_seconds[0] / frames * 1e6,
        "model_stage_wall_us": model_wall_seconds[0] / frames * 1e6,
        "frames_per_s": frames / wall,
        "threads_us": {name: round(seconds / frames * 1e6, 1) for name, seconds in by_thread.items()},
        # Each stage's wall-clock time, summed over the batches (lanes overlap: more than the run).
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in report.stage_seconds.items()},
        "watcher": str(Path(sys.modules["watcher"].__file__ or "").parent),
    }


def _as_on_a_stand_in_gpu(model_ms: float, copy_ms: float) -> None:
    """In the child, before the daemon is built: the daemon's stages as on a GPU (the lanes of
    `batch.gpu_lanes`, fewer arenas than lanes, each given back once its frames are on the
    device), with a stand-in for the device, which cannot exist here: the copy to it takes
    `copy_ms` and CLIP's stage `model_ms` per 128 frames, one batch at a time on each (one copy
    engine, one GPU), without the GIL (a GPU's own time, asleep here), and CLIP's stage returns zero
    features without looking at the pixels. Everything else runs as it does (claims, reads on the
    file processes, the head, rows, moves): frames/s is the most this machine's CPU and the
    daemon's structure let it feed a GPU of that speed (0 and 0: an instant one)."""
    import numpy as np

    from model.clip_features import ClipFeatureExtractor
    from watcher.pipeline import lanes
    from watcher.pipeline.processing import BatchProcessor

    plan_lanes = lanes.plan_lanes
    computing, copying = threading.Lock(), threading.Lock()

    def planned_as_on_a_gpu(
        *, on_accelerator: bool, cpu_threads: int, gpu_lanes: int = lanes.GPU_LANES
    ) -> Any:
        return plan_lanes(on_accelerator=True, cpu_threads=cpu_threads, gpu_lanes=gpu_lanes)

    def features_on_the_device(self: Any, images: Any) -> Any:
        if model_ms:
            with computing:
                time.sleep(model_ms / 1000 * len(images) / BATCH)
        return np.zeros((len(images), self.feature_size), dtype=np.float32)

    def taken_to_the_device(self: Any, frames: Any) -> Any:
        if copy_ms:
            with copying:
                time.sleep(copy_ms / 1000 * len(frames) / BATCH)
        return list(frames)

    lanes.plan_lanes = planned_as_on_a_gpu
    BatchProcessor.model_on_accelerator = property(lambda self: True)  # type: ignore[assignment,method-assign]
    ClipFeatureExtractor.image_features = features_on_the_device  # type: ignore[method-assign]
    ClipFeatureExtractor.taken_in = taken_to_the_device  # type: ignore[method-assign]


def _run_live(daemon: Any, stop: threading.Event, waiting: int) -> Any:
    """The daemon's loop as `watch` runs it, on a thread of its own, stopped as soon as every
    frame that was waiting has its outcome (a bench: polling every 5 ms is its resolution)."""
    running = threading.Thread(target=daemon.run, kwargs={"once": False}, name="bench-live-daemon")
    running.start()
    while daemon.report.ok + daemon.report.failed < waiting and running.is_alive():
        time.sleep(0.005)
    report = daemon.report
    stop.set()  # as `watch` does on SIGTERM
    daemon.wake()
    running.join()
    return report


def measure_in_child(
    repo: Path, config: Path, *, live: bool = False, stand_in_gpu: tuple[float, float] | None = None
) -> dict[str, Any]:
    """`measure` in a process of its own, with the `watcher` package of checkout `repo`."""
    call = f"measure(daemon_cpu.Path({str(config)!r}), live={live!r}, stand_in_gpu={stand_in_gpu!r})"
    return measured_in_checkout(repo, "daemon_cpu", call, cwd=config.parent)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    outside = [run["outside_model_us"] for run in runs]
    middle = sorted(runs, key=lambda run: run["outside_model_us"])[len(runs) // 2]
    return {
        "outside_model_us": round(statistics.median(outside), 1),
        "runs_us": [round(value, 1) for value in outside],
        "model_stage_us": round(middle["model_stage_us"], 1),
        "model_stage_wall_us": round(statistics.median(run["model_stage_wall_us"] for run in runs), 1),
        "frames_per_s": round(statistics.median(run["frames_per_s"] for run in runs), 1),
        "frames_per_s_runs": [round(run["frames_per_s"]) for run in runs],
        "threads_us_of_median_run": middle["threads_us"],
        "stage_seconds_of_median_run": middle["stage_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Start-up's fixed CPU (recovery, the instance's rows) is spread over the frames: many frames.
    parser.add_argument("--frames", type=int, default=32 * BATCH, help="a multiple of 128: full batches")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median counts")
    parser.add_argument(
        "--file-processes",
        type=_processes,
        default=2,
        help="batch.file_processes: a number, or auto (one fewer than the cores, as on a GPU)",
    )
    # The daemon's own work does not depend on the frames' size (it never touches their pixels on
    # a GPU); the model stage's resize does, and small frames keep what is subtracted small.
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the daemon as `watch` does (inotify events on), not `--once`, until every frame is done",
    )
    parser.add_argument(
        "--stand-in-gpu",
        nargs=2,
        type=float,
        default=None,
        metavar=("MODEL_MS", "COPY_MS"),
        help="shape the daemon as on a GPU whose model takes MODEL_MS and whose copy COPY_MS per 128 "
        "frames (0 0: an instant one); its frames/s is what the pipeline can feed such a GPU here",
    )
    parser.add_argument("--gpu-lanes", type=int, default=None, help="batch.gpu_lanes, with --stand-in-gpu")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    args = parser.parse_args()
    compared = checkouts(args.baseline)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in compared}
    with tempfile.TemporaryDirectory(prefix="cctv-daemon-cpu-") as temp:
        work = Path(temp)
        clip = build_model(work / "clip", "tiny")
        maker = FrameMaker(width=args.width, height=args.height)
        for repeat in range(args.repeats):
            for name, repo in in_turn(compared, repeat):
                root = work / f"{name}-{repeat}"
                config = _prepare(
                    root, clip, args.frames, maker, args.file_processes, gpu_lanes=args.gpu_lanes
                )
                runs[name].append(
                    measure_in_child(repo, config, live=args.live, stand_in_gpu=_pair(args.stand_in_gpu))
                )
                shutil.rmtree(root)
    figures = {name: _summary(measured) for name, measured in runs.items()}
    ours = figures["ours"]["outside_model_us"]
    figures["budget_us"] = BUDGET_US
    figures["frames"] = args.frames
    figures["mode"] = "live" if args.live else "once"
    figures["stand_in_gpu_ms"] = args.stand_in_gpu
    figures["file_processes"] = args.file_processes
    for name, summary in figures.items():
        if isinstance(summary, dict):
            print(
                f"{name}: the daemon's own CPU outside the model {summary['outside_model_us']:.0f} µs "
                "a frame "
                f"(runs {', '.join(f'{value:.0f}' for value in summary['runs_us'])}): at most "
                f"{1e6 / summary['outside_model_us']:,.0f} frames/s if it all held the GIL; by thread "
                f"{summary['threads_us_of_median_run']}"
            )
            print(
                f"{name}: the model stage {summary['model_stage_wall_us']:.0f} µs a frame of wall-clock "
                f"time (its CPU {summary['model_stage_us']:.0f}: the rest it waited, for the GIL among "
                f"others), {summary['frames_per_s']:.0f} frames/s from the first scan to the last move (runs "
                f"{', '.join(map(str, summary['frames_per_s_runs']))}); "
                f"stages' seconds summed over the batches {summary['stage_seconds_of_median_run']}"
            )
    if "baseline" in figures:
        baseline = figures["baseline"]["outside_model_us"]
        figures["ratio_to_baseline"] = round(ours / baseline, 3)
        print(f"ours / baseline {ours / baseline:.2f}")
        speed = figures["ours"]["frames_per_s"] / figures["baseline"]["frames_per_s"]
        figures["frames_per_s_ratio_to_baseline"] = round(speed, 3)
        print(f"frames/s, ours / baseline {speed:.2f}")
    print(f"budget at 5,000 frames/s: {BUDGET_US:.0f} µs a frame; ours {ours / BUDGET_US:.2f} of it")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


def _processes(text: str) -> int:
    """A number, or auto: what `batch.file_processes = "auto"` gives on a GPU (here, where the tiny
    CLIP runs on the CPU, the daemon's own auto would give none)."""
    if text != "auto":
        return int(text)
    from watcher.config.sections import BatchConfig

    return BatchConfig(file_processes="auto").file_process_count(on_accelerator=True)


def _pair(values: list[float] | None) -> tuple[float, float] | None:
    return None if values is None else (values[0], values[1])


if __name__ == "__main__":
    main()
