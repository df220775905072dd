"""A filtered query over a million result rows: one camera, one day.

    .venv/bin/python bench/query.py [--rows 1000000]

Builds a results database at the current schema (Alembic), fills it with N rows (50 cameras,
30 days), then times, in the same run: `results --camera cam-07 --since D --until D+1` streamed
as JSON Lines, and `summary --by hour` for that camera and day by processing time and by capture
time (summary's default; hours in Europe/London) — first on the database as the
migrations made it, then on a copy without the secondary indexes (the baseline). Prints both and
their ratio, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from watcher.store.engine import make_engine  # noqa: E402
from watcher.store.export import OutputFormat, iter_results, write_results  # noqa: E402
from watcher.store.migrate import upgrade_to_head  # noqa: E402
from watcher.store.queries import ResultFilter, TimeBasis  # noqa: E402
from watcher.store.summary import summarize  # noqa: E402

START = datetime(2026, 10, 1, tzinfo=UTC)
CAMERAS = [f"cam-{index:02d}" for index in range(50)]


def fill(database: Path, rows: int) -> None:
    rng = random.Random(0)
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")  # bulk load only; the daemon runs with FULL
    span_s = 30 * 86400
    batch = []
    for index in range(rows):
        at = (START + timedelta(seconds=span_s * index / rows)).strftime("%Y-%m-%d %H:%M:%S.%f")
        camera = rng.choice(CAMERAS)
        failed = rng.random() < 0.02
        label = None if failed else rng.choice(("female", "male"))
        batch.append((
            f"{index:032x}", camera, f"{camera}/{index}.bmp", f"/srv/processed/{camera}/{index}.bmp",
            "0" * 64, 921654, 640, 480, at, at, at, label, None if failed else rng.uniform(0.5, 1.0),
            "v1", "failed" if failed else "ok", "truncated: 1 of 2 declared bytes" if failed else None,
        ))  # fmt: skip
        if len(batch) == 50_000:
            _insert(connection, batch)
            batch.clear()
    _insert(connection, batch)
    connection.execute("ANALYZE")
    connection.close()


def _insert(connection: sqlite3.Connection, batch: list[tuple]) -> None:
    connection.executemany(
        "INSERT INTO results (frame_key, camera, source_path, stored_path, sha256, size_bytes, width, "
        "height, file_mtime, received_at, processed_at, label, probability, model_version, status, error) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        batch,
    )
    connection.commit()


def time_queries(database: Path, *, repeats: int) -> tuple[float, float, int, float]:
    engine = make_engine(f"sqlite:///{database}", busy_timeout_ms=1000)
    day = START + timedelta(days=14)
    filters = ResultFilter(cameras=("cam-07",), since=day, until=day + timedelta(days=1))
    captured = replace(filters, time_basis=TimeBasis.CAPTURED)
    london = ZoneInfo("Europe/London")
    results_s, summary_s, captured_s, count = [], [], [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        summarize(engine, filters=captured, by=("hour",), zone=london)
        captured_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        count = write_results(iter_results(engine, filters=filters, limit=None), io.StringIO(),
                              output_format=OutputFormat.JSONL)  # fmt: skip
        results_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        summarize(engine, filters=filters, by=("hour",), zone=UTC)
        summary_s.append(time.perf_counter() - started)
    engine.dispose()
    return statistics.median(results_s), statistics.median(summary_s), count, statistics.median(captured_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "query.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cctv-query-") as scratch:
        database = Path(scratch) / "results.sqlite3"
        upgrade_to_head(make_engine(f"sqlite:///{database}", busy_timeout_ms=1000))
        started = time.perf_counter()
        fill(database, args.rows)
        print(f"filled {args.rows} rows in {time.perf_counter() - started:.1f} s")
        indexed = time_queries(database, repeats=args.repeats)

        baseline_db = Path(scratch) / "no-indexes.sqlite3"
        shutil.copyfile(database, baseline_db)
        connection = sqlite3.connect(baseline_db)
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_results_%'"
        ).fetchall():
            connection.execute(f"DROP INDEX {name}")
        connection.commit()
        connection.close()
        baseline = time_queries(baseline_db, repeats=args.repeats)

    result = {
        "rows": args.rows,
        "matching_rows": indexed[2],
        "results_s": round(indexed[0], 4),
        "summary_s": round(indexed[1], 4),
        "baseline_results_s": round(baseline[0], 4),
        "baseline_summary_s": round(baseline[1], 4),
        "results_speedup": round(baseline[0] / indexed[0], 1),
        "summary_speedup": round(baseline[1] / indexed[1], 1),
        "summary_captured_s": round(indexed[3], 4),
        "baseline_summary_captured_s": round(baseline[3], 4),
        "summary_captured_speedup": round(baseline[3] / indexed[3], 1),
    }
    print(f"one camera, one day out of {args.rows} rows ({indexed[2]} match), median of {args.repeats}:")
    for name, ours, theirs, ratio in (
        ("results --format jsonl", indexed[0], baseline[0], result["results_speedup"]),
        ("summary --by hour --time processed", indexed[1], baseline[1], result["summary_speedup"]),
        ("summary --by hour (captured)", indexed[3], baseline[3], result["summary_captured_speedup"]),
    ):
        print(f"  {name:<34} {ours * 1000:8.1f} ms   without indexes {theirs * 1000:8.1f} ms   {ratio}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
