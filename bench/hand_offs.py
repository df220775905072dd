"""A batch's hand-offs to its file workers beside busy Python: what a read round costs the batch.

    .venv/bin/python bench/hand_offs.py [--workers 15] [--frames 128] [--rounds 40] [--busy 0 1 2]
                                        [--repeats 3] [--baseline DIR] [--json FILE]

On a GPU a batch's frames are read by the file worker processes (watcher.pipeline.file_workers):
the batch thread writes a share to each worker's pipe and reads the answers. Every system call
gives the GIL back, and taking it again waits, while another of the daemon's threads runs Python
(the other lanes committing and moving, the loop claiming), until that thread is made to let go:
up to the switch interval (5 ms) each time. On 2 cores this cannot show in the daemon (the
workers and the daemon's threads share two cores); on a GPU host's 16 it is the read stage. So
this measures the hand-off itself: `FileWorkers.read` of one batch of `--frames` claimed 160×120
frames into an arena, `--rounds` times, alone and beside `--busy` threads running Python (as
bench/gil_convoy.py does for the model stage), with `--workers` worker processes: the median ms a
round. `--baseline DIR` measures another checkout (a `git worktree`) the same way in the same
run, runs alternating, and prints the ratios. Each measurement runs in a process of its own with
that checkout's `watcher` package.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from harness import REPO, FrameMaker, busy_python, measured_in_checkout, write_json


def measure(root: Path, *, workers: int, frames: int, rounds: int, busy: list[int]) -> dict[str, Any]:
    """In the child: the batch's frames claimed once, then read `rounds` times beside each number
    of busy threads; the median ms a round for each."""
    import torch

    import watcher
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
        return {
            "watcher": watcher.__file__,
            "ms_a_round": {str(count): _rounds_beside(count, pool, claimed, arena, rounds) for count in busy},
        }
    finally:
        pool.close()
        arena.close()


def _rounds_beside(busy: int, pool: Any, claimed: list[Any], arena: Any, rounds: int) -> float:
    with busy_python(busy):  # the daemon's other threads, running Python
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            decoded = pool.read(claimed, refused={}, arena=arena)
            times.append(time.perf_counter() - started)
            assert all(item.error is None for item in decoded), "every frame read"
        return round(statistics.median(times) * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=int, default=15, help="file worker processes (a GPU host's 16 cores: 15)"
    )
    parser.add_argument("--frames", type=int, default=128, help="frames a batch")
    parser.add_argument("--rounds", type=int, default=40, help="batches read a measurement")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy Python threads beside")
    parser.add_argument(
        "--repeats", type=int, default=3, help="measurements of each checkout; the median counts"
    )
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "hand_offs.json")
    args = parser.parse_args()
    checkouts = {"ours": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory(prefix="cctv-hand-offs-") as temp:
        for repeat in range(args.repeats):
            for name, repo in checkouts.items():
                root = Path(temp) / f"{name}-{repeat}"
                call = (
                    f"measure(hand_offs.Path({str(root)!r}), workers={args.workers}, frames={args.frames}, "
                    f"rounds={args.rounds}, busy={args.busy!r})"
                )
                runs[name].append(measured_in_checkout(repo, "hand_offs", call)["ms_a_round"])
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
    print(
        f"FileWorkers.read of {args.frames} frames on {args.workers} worker processes, "
        f"ms a round (median of {args.repeats}):"
    )
    for busy in map(str, args.busy):
        line = "  ".join(f"{name} {figures[name][busy]['median_ms']:8.2f}" for name in runs)
        ratio = ""
        if "baseline" in runs:
            ours, baseline = figures["ours"][busy]["median_ms"], figures["baseline"][busy]["median_ms"]
            ratio = f"  ours / baseline {ours / baseline:.3f}"
        print(f"  beside {busy} busy Python thread(s): {line}{ratio}")
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
