"""A batch's commit stage beside busy Python: its rows' destinations reserved, then committed.

    .venv/bin/python bench/placing.py [--workers 2] [--frames 128] [--rounds 30] [--busy 0 1 2]
                                      [--repeats 3] [--baseline DIR] [--json FILE]

The commit stage (watcher.pipeline.recording.Recorder.record) reserves each frame's destination
in `processed/` (a name already there gets a numbered one: one look a frame, see
watcher.intake.held_lookups) and commits the batch's rows in one transaction. Each call that
gives the GIL back must take it again, and while another of the daemon's threads runs Python (the
other lanes, the loop claiming) that take waits until the other is made to let go: up to the
switch interval (5 ms). This measures `Recorder.record` itself on one batch of `--frames` claimed
160×120 frames, `--rounds` times (the rows deleted and the names given back between rounds,
untimed), alone and beside `--busy` threads running Python: the median ms a round. `--workers`
file worker processes read the batch once before. `--baseline DIR` measures another checkout (a
`git worktree`) the same way in the same run, runs alternating, and prints the ratios. Each
measurement runs in a process of its own with that checkout's `watcher` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import beside_busy
from beside_busy import claimed_batch, median_ms_beside


def measure(root: Path, *, workers: int, frames: int, rounds: int, busy: list[int]) -> dict[str, Any]:
    """In the child: the batch's frames claimed and read once, then recorded `rounds` times beside
    each number of busy threads; the median ms a round for each."""
    from watcher.pipeline.stages import OutputFolders
    from watcher.store.engine import make_engine

    folders = OutputFolders(processed=root / "processed", failed=root / "failed")
    engine = make_engine(f"sqlite:///{root / 'results.sqlite3'}", busy_timeout_ms=30_000)
    try:
        return _rounds(root, engine, folders, workers=workers, frames=frames, rounds=rounds, busy=busy)
    finally:
        engine.dispose()


def _rounds(
    root: Path, engine: Any, folders: Any, *, workers: int, frames: int, rounds: int, busy: list[int]
) -> dict[str, Any]:
    import watcher
    from watcher.pipeline.recording import Recorder
    from watcher.pipeline.stages import Classification, Classified
    from watcher.store.file_guard import DatabaseFileGuard
    from watcher.store.migrate import upgrade_to_head

    with claimed_batch(root, workers=workers, frames=frames) as (pool, arena, claimed):
        for folder in (folders.processed, folders.failed):
            folder.mkdir()
        upgrade_to_head(engine)
        said = Classification(label="female", probability=0.9, model_version="bench", precision="fp16")
        classified = [
            Classified(item.frame, item.facts, said) for item in pool.read(claimed, refused={}, arena=arena)
        ]
        recorder = Recorder(engine, folders, DatabaseFileGuard(engine))

        def put_back(stored: list[Any]) -> None:
            assert len(stored) == len(classified), "every row committed"
            assert all(item.record.stored_path.endswith(item.frame.relative.name) for item in stored)
            recorder.moved(stored)  # the names given back: the next round reserves the same ones
            with engine.begin() as connection:
                connection.exec_driver_sql("DELETE FROM results")

        return {
            "watcher": watcher.__file__,
            "ms_a_round": {
                str(count): median_ms_beside(count, rounds, lambda: recorder.record(classified), put_back)
                for count in busy
            },
        }


if __name__ == "__main__":
    beside_busy.main("placing", __doc__, workers=2, rounds=30, what="Recorder.record of {frames} frames")
