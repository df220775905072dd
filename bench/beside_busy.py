"""What the benchmarks of one batch stage beside busy Python share (bench/hand_offs.py,
bench/placing.py): a claimed batch, rounds timed beside busy threads, each checkout measured in
turn, and the figures printed.

A call that gives the GIL back must take it again, and while another of the daemon's threads runs
Python (the other lanes, the loop claiming) that take can wait until the other is made to let go:
up to the switch interval (5 ms). harness.busy_python's threads are those threads at their
busiest. This module is imported by the benchmarks, not run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from harness import REPO, FrameMaker, busy_python, checkouts, in_turn, measured_in_checkout, write_json

_T = TypeVar("_T")


def main(module: str, doc: str, *, workers: int, rounds: int, what: str) -> None:
    """A benchmark's command line: `module.measure` in each checkout, then the figures printed
    (`what` names the stage, formatted with the arguments: "... of {frames} frames")."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    _add_arguments(parser, workers=workers, rounds=rounds, json_name=f"{module}.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"cctv-{module}-") as temp:
        figures = measure_checkouts(module, args, Path(temp))
    report(figures, args, what.format(**vars(args)))


def _add_arguments(parser: argparse.ArgumentParser, *, workers: int, rounds: int, json_name: str) -> None:
    parser.add_argument(
        "--workers", type=int, default=workers, help="file worker processes (a GPU host's 16 cores: 15)"
    )
    parser.add_argument("--frames", type=int, default=128, help="frames a batch")
    parser.add_argument("--rounds", type=int, default=rounds, help="batches a measurement")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy Python threads beside")
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements of each checkout; the median counts"
    )
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / json_name)


@contextmanager
def claimed_batch(root: Path, *, workers: int, frames: int) -> Iterator[tuple[Any, Any, list[Any]]]:
    """In the child: `workers` file worker processes, an arena for a batch, and the batch's
    `frames` 160×120 frames written into an inbox under `root` and claimed on the workers."""
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
    """`work` timed `rounds` times beside `busy` threads running Python; `after` (untimed) checks
    each round's result and undoes what the next round must not find. The median, in ms."""
    with busy_python(busy):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            done = work()
            times.append(time.perf_counter() - started)
            after(done)
        return round(statistics.median(times) * 1000, 3)


def measure_checkouts(module: str, args: argparse.Namespace, temp: Path) -> dict[str, Any]:
    """`module.measure(root, workers=, frames=, rounds=, busy=)` in a process of its own for this
    checkout and `--baseline`'s, alternating, `--repeats` times each: its "ms_a_round" by number
    of busy threads, their medians and every run's, as JSON would hold them."""
    compared = checkouts(args.baseline)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in compared}
    for repeat in range(args.repeats):
        for name, repo in in_turn(compared, repeat):
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
    for name, each in runs.items():
        figures[name] = {
            busy: {
                "median_ms": statistics.median(run[busy] for run in each),
                "runs_ms": [run[busy] for run in each],
            }
            for busy in map(str, args.busy)
        }
    return figures


def report(figures: dict[str, Any], args: argparse.Namespace, what: str) -> None:
    """Each checkout's median ms a round beside each number of busy threads, the ratio to the
    baseline, and the JSON written to `--json`."""
    print(f"{what} with {args.workers} worker processes, ms a round (median of {args.repeats}):")
    names = [name for name in ("ours", "baseline") if name in figures]
    for busy in map(str, args.busy):
        line = "  ".join(f"{name} {figures[name][busy]['median_ms']:8.2f}" for name in names)
        ratio = ""
        if "baseline" in figures:
            ours, baseline = figures["ours"][busy]["median_ms"], figures["baseline"][busy]["median_ms"]
            ratio = f"  ours / baseline {ours / baseline:.3f}"
        print(f"  beside {busy} busy Python thread(s): {line}{ratio}")
    write_json(args.json, figures)
