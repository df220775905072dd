"""A batch's commit stage beside busy Python: its rows' destinations reserved, then committed.

    .venv/bin/python bench/placing.py [--workers 2] [--frames 128] [--rounds 30] [--busy 0 1 2]
                                      [--repeats 3] [--baseline DIR] [--json FILE]

The commit stage (watcher.pipeline.recording.Recorder.record) reserves each frame's destination
in `processed/` (a name already there gets a numbered one) and commits the batch's rows in one
transaction. Each look at a destination, and each call into SQLite, gives the GIL back, and
taking it again waits, while another of the daemon's threads runs Python (the other lanes, the
loop claiming), until that thread is made to let go: up to the switch interval (5 ms) each time.
On a GPU host the daemon's threads are busy enough for this to be the stage. This measures
`Recorder.record` itself on one batch of `--frames` claimed 160×120 frames, `--rounds` times
(the rows deleted and the names given back between rounds, outside the time), alone and beside
`--busy` threads running Python, with `--workers` file worker processes where the checkout's
Recorder looks at the destinations on them: the median ms a round. `--baseline DIR` measures
another checkout (a `git worktree`) the same way in the same run, runs alternating, and prints
the ratios. Each measurement runs in a process of its own with that checkout's `watcher` package.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
from pathlib import Path
from typing import Any

from beside_busy import add_arguments, claimed_batch, measure_checkouts, median_ms_beside, report


def measure(root: Path, *, workers: int, frames: int, rounds: int, busy: list[int]) -> dict[str, Any]:
    """In the child: the batch's frames claimed and read once, then recorded `rounds` times beside
    each number of busy threads; the median ms a round for each."""
    import watcher
    from watcher.pipeline.recording import Recorder
    from watcher.pipeline.stages import Classification, Classified, OutputFolders
    from watcher.store.engine import make_engine
    from watcher.store.file_guard import DatabaseFileGuard
    from watcher.store.migrate import upgrade_to_head

    folders = OutputFolders(processed=root / "processed", failed=root / "failed")
    engine = make_engine(f"sqlite:///{root / 'results.sqlite3'}", busy_timeout_ms=30_000)
    with claimed_batch(root, workers=workers, frames=frames) as (pool, arena, claimed):
        for folder in (folders.processed, folders.failed):
            folder.mkdir()
        upgrade_to_head(engine)
        said = Classification(label="female", probability=0.9, model_version="bench", precision="fp16")
        classified = [
            Classified(item.frame, item.facts, said) for item in pool.read(claimed, refused={}, arena=arena)
        ]
        # The checkout's own Recorder, as its BatchProcessor makes it with file workers.
        looks_on_workers = "existing" in inspect.signature(Recorder).parameters
        extra = {"existing": pool.existing} if looks_on_workers else {}
        recorder = Recorder(engine, folders, DatabaseFileGuard(engine), **extra)
        try:
            return {
                "watcher": watcher.__file__,
                "looks_on_workers": looks_on_workers,
                "ms_a_round": {
                    str(count): _rounds_beside(count, recorder, classified, engine, rounds) for count in busy
                },
            }
        finally:
            engine.dispose()


def _rounds_beside(busy: int, recorder: Any, classified: list[Any], engine: Any, rounds: int) -> float:
    def put_back(stored: list[Any]) -> None:
        assert len(stored) == len(classified), "every row committed"
        assert all(item.record.stored_path.endswith(item.frame.relative.name) for item in stored)
        recorder.moved(stored)  # the names given back: the next round reserves the same ones
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM results")

    return median_ms_beside(busy, rounds, lambda: recorder.record(classified), put_back)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, workers=2, rounds=30, json_name="placing.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cctv-placing-", dir="/var/tmp") as temp:
        figures = measure_checkouts("placing", args, Path(temp))
    report(figures, args, f"Recorder.record of {args.frames} frames")


if __name__ == "__main__":
    main()
