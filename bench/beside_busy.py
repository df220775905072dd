"""What the benchmarks of one stage beside busy Python share (bench/hand_offs.py, bench/placing.py):
the busy threads, the rounds timed beside them, each checkout measured in turn, and the figures.

A call that gives the GIL back must take it again, and while another thread runs Python that take
waits until the other is made to let go: up to the switch interval (5 ms). The daemon's other
threads (the loop claiming, the other lanes placing rows) are that Python; a busy thread that
never waits is them at their busiest. This module is imported by the benchmarks, not run.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from harness import REPO, FrameMaker, measured_in_checkout, write_json

_T = TypeVar("_T")


@contextmanager
def busy_python(threads: int) -> Iterator[None]:
    """`threads` threads running Python that never waits, for as long as the body runs."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(threads)]
    for thread in spinners:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in spinners:
            thread.join()


@contextmanager
def claimed_batch(root: Path, *, workers: int, frames: int) -> Iterator[tuple[Any, Any, list[Any]]]:
    """`workers` file worker processes, an arena for a batch, and the batch's `frames` 160×120
    frames written into an inbox under `root` and claimed on the workers (the watcher package of
    the checkout being measured)."""
    import torch

    from watcher.pipeline.arenas import ARENA_BYTES_PER_FRAME, Arena
    from watcher.pipeline.file_workers import FileWorkers
    from watcher.pipeline.stages import FrameBounds

    inbox, area = root / "inbox", root / "inbox" / ".in-progress" / "bench"
    area.mkdir(parents=True)
    maker = FrameMaker(width=160, height=120)
    names = [PurePosixPath(f"cam-{index % 4}/frame-{index:05d}.bmp") for index in range(frames)]
    for index, name in enumerate(names):
        maker.write(inbox / name, index)
    pool = FileWorkers(workers, FrameBounds(max_pixels=10_000_000, max_file_bytes=100_000_000))
    arena = Arena(frames * ARENA_BYTES_PER_FRAME, torch.device("cpu"))
    try:
        outcomes = pool.claim(
            [(name, None) for name in names], inbox=inbox, area=area, settle_s=0.0, timeout_s=60.0
        )
        claimed = [outcome.frame for outcome in outcomes if outcome.frame is not None]
        assert len(claimed) == frames, "every frame claimed"
        yield pool, arena, claimed
    finally:
        pool.close()
        arena.close()


def median_ms_beside(
    busy: int, rounds: int, work: Callable[[], _T], after: Callable[[_T], None] = lambda _: None
) -> float:
    """The median ms of `work` over `rounds` rounds beside `busy` busy threads; `after` gets each
    round's result, outside the time (checks, putting things back for the next round)."""
    with busy_python(busy):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            result = work()
            times.append(time.perf_counter() - started)
            after(result)
    return round(statistics.median(times) * 1000, 3)


def add_arguments(parser: argparse.ArgumentParser, *, workers: int, rounds: int, json_name: str) -> None:
    """The options every such benchmark takes."""
    parser.add_argument("--workers", type=int, default=workers, help="file worker processes")
    parser.add_argument("--frames", type=int, default=128, help="frames a batch")
    parser.add_argument("--rounds", type=int, default=rounds, help="batches a measurement")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy Python threads beside")
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements of each checkout; the median counts"
    )
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / json_name)


def measure_checkouts(module: str, args: argparse.Namespace, temp: Path) -> dict[str, Any]:
    """`module.measure(root, workers=, frames=, rounds=, busy=)` for this checkout and the
    baseline's, `--repeats` times each, alternating, each in a process of its own; the figures:
    each checkout's median ms a round beside each number of busy threads, its runs, the ratios."""
    checkouts = {"ours": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    for repeat in range(args.repeats):
        for name, repo in checkouts.items():
            root = temp / f"{name}-{repeat}"
            call = (
                f"measure({module}.Path({str(root)!r}), workers={args.workers}, frames={args.frames}, "
                f"rounds={args.rounds}, busy={args.busy!r})"
            )
            runs[name].append(measured_in_checkout(repo, module, call)["ms_a_round"])
    figures: dict[str, Any] = {
        "workers": args.workers,
        "frames": args.frames,
        "rounds": args.rounds,
        "repeats": args.repeats,
    }
    for name, measured in runs.items():
        figures[name] = {
            busy: {
                "median_ms": statistics.median(run[busy] for run in measured),
                "runs_ms": [run[busy] for run in measured],
            }
            for busy in map(str, args.busy)
        }
    if "baseline" in runs:
        for busy in map(str, args.busy):
            ours, baseline = figures["ours"][busy]["median_ms"], figures["baseline"][busy]["median_ms"]
            figures[f"ratio_beside_{busy}"] = round(ours / baseline, 3)
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace, what: str) -> None:
    """The figures printed, one line for each number of busy threads, and written as JSON."""
    names = [name for name in ("ours", "baseline") if name in figures]
    print(f"{what}, ms a round (median of {args.repeats}):")
    for busy in map(str, args.busy):
        line = "  ".join(f"{name} {figures[name][busy]['median_ms']:8.2f}" for name in names)
        ratio = figures.get(f"ratio_beside_{busy}")
        print(
            f"  beside {busy} busy Python thread(s): {line}"
            + (f"  ours / baseline {ratio:.3f}" if ratio else "")
        )
    write_json(args.json, figures)
