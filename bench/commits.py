"""The commit stage with batches in flight: lanes committing their batches' rows to one SQLite file.

    .venv/bin/python bench/commits.py [--lanes 1 3 6] [--batches 30] [--batch 128] [--other-ms 20]
                                      [--busy 0] [--repeats 3] [--baseline DIR] [--json FILE]

Each lane (a thread, as watcher.pipeline.lanes runs batches) commits `--batches` batches of
`--batch` result rows through `writes.insert_new`, the daemon's own commit (one transaction,
synchronous=FULL), spending `--other-ms` between commits as a lane spends its other stages
(reading, the model, the moves). `--busy N` runs N threads of pure Python beside them, as the
daemon's loop and other lanes are (each of the commit's calls that gives the GIL back may then
wait up to the switch interval to take it again). Prints rows/s and each commit's time (the
whole `insert_new`: its turn at the write lock, the insert and the fsync; mean, p90, max) for
each number of lanes; with `--baseline DIR`, the same in another checkout (a `git worktree`),
runs alternating, and the ratios. Each measurement runs in a process of its own with that
checkout's `watcher` package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import busy_python, checkouts, in_turn, measured_in_checkout


def measure(
    database: Path, *, lanes: int, batches: int, batch: int, other_ms: float, busy: int = 0
) -> dict[str, Any]:
    """In the child: `lanes` threads committing, `busy` threads running Python beside them; rows/s
    and the commits' waits."""
    import watcher
    from watcher.store import writes
    from watcher.store.engine import make_engine
    from watcher.store.migrate import upgrade_to_head
    from watcher.store.records import ResultRecord

    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=30_000)
    upgrade_to_head(engine)
    now = datetime.now(UTC)
    waits: list[float] = []
    ready = threading.Barrier(lanes)

    def lane(number: int) -> None:
        ready.wait()
        for turn in range(batches):
            records = [
                ResultRecord(
                    frame_key=f"{number:04d}{turn:06d}{index:06d}".ljust(32, "0"),
                    source_path=f"cam-{number}/{turn}/{index}.bmp",
                    stored_path=f"/site/processed/cam-{number}/{turn}/{index}.bmp",
                    received_at=now,
                    processed_at=now,
                    status="ok",
                    sha256="ab" * 32,
                    size_bytes=921_654,
                    width=640,
                    height=480,
                    label="female",
                    probability=0.5,
                    model_version="zero-shot:bench",
                    embedding=bytes(1024),
                    embedding_model="bench",
                )
                for index in range(batch)
            ]
            started = time.perf_counter()
            writes.insert_new(engine, records)
            waits.append(time.perf_counter() - started)
            time.sleep(other_ms / 1000)  # the lane's other stages

    threads = [threading.Thread(target=lane, args=(number,)) for number in range(lanes)]
    with busy_python(busy):
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    waits.sort()
    return {
        "watcher": str(Path(watcher.__file__).resolve()),
        "rows_per_s": lanes * batches * batch / wall,
        "commit_mean_ms": statistics.mean(waits) * 1000,
        "commit_p90_ms": waits[int(len(waits) * 0.9)] * 1000,
        "commit_max_ms": waits[-1] * 1000,
    }


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=_positive, nargs="+", default=[1, 3, 6])
    parser.add_argument("--batches", type=_positive, default=30)
    parser.add_argument("--batch", type=_positive, default=128)
    parser.add_argument("--other-ms", type=float, default=20.0)
    parser.add_argument("--busy", type=int, default=0, help="threads running Python beside the lanes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR", help="another checkout")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    args = parser.parse_args()
    compared = checkouts(args.baseline)
    settings = {"batches": args.batches, "batch": args.batch, "other_ms": args.other_ms, "busy": args.busy}
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {name: {} for name in compared}
    with tempfile.TemporaryDirectory(prefix="cctv-commits-", dir="/var/tmp") as temp:
        for repeat in range(args.repeats):
            for lanes in args.lanes:
                for name, repo in in_turn(compared, repeat):
                    database = Path(temp) / f"{name}-{lanes}-{repeat}.sqlite3"
                    call = f"measure(commits.Path({str(database)!r}), lanes={lanes}, **{settings!r})"
                    measured = measured_in_checkout(repo, "commits", call)
                    runs[name].setdefault(lanes, []).append(measured)
    figures: dict[str, Any] = {"settings": settings, "repeats": args.repeats}
    for lanes in args.lanes:
        line = []
        for name in compared:
            median = {
                key: statistics.median(run[key] for run in runs[name][lanes])
                for key in ("rows_per_s", "commit_mean_ms", "commit_p90_ms", "commit_max_ms")
            }
            figures[f"{name}_lanes{lanes}"] = median
            line.append(
                f"{name} {median['rows_per_s']:,.0f} rows/s, a commit {median['commit_mean_ms']:.1f} ms "
                f"(p90 {median['commit_p90_ms']:.1f}, max {median['commit_max_ms']:.1f})"
            )
        if "baseline" in compared:
            ratio = (
                figures[f"ours_lanes{lanes}"]["rows_per_s"] / figures[f"baseline_lanes{lanes}"]["rows_per_s"]
            )
            figures[f"ratio_lanes{lanes}"] = round(ratio, 3)
            line.append(f"ours / baseline {ratio:.2f}")
        print(f"{lanes} lane(s), batches of {args.batch}: " + "; ".join(line))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
