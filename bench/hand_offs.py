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
that checkout's `watcher` package (see bench/beside_busy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import beside_busy
from beside_busy import claimed_batch, median_ms_beside


def measure(root: Path, *, workers: int, frames: int, rounds: int, busy: list[int]) -> dict[str, Any]:
    """In the child: the batch's frames claimed once, then read `rounds` times beside each number
    of busy threads; the median ms a round for each."""
    import watcher

    with claimed_batch(root, workers=workers, frames=frames) as (pool, arena, claimed):

        def read() -> list[Any]:
            return pool.read(claimed, refused={}, arena=arena)

        def check(decoded: list[Any]) -> None:
            assert all(item.error is None for item in decoded), "every frame read"

        return {
            "watcher": watcher.__file__,
            "ms_a_round": {str(count): median_ms_beside(count, rounds, read, check) for count in busy},
        }


if __name__ == "__main__":
    beside_busy.main("hand_offs", __doc__, workers=15, rounds=40, what="FileWorkers.read of {frames} frames")
