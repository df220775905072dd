"""bench/hand_offs.py, which measures the file workers' hand-offs beside busy Python (see
watcher.pipeline.gil_held_pipes), runs: a tiny run here, with this checkout as its own baseline,
so that the script cannot rot between the runs that quote it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_hand_offs_bench_measures_a_read_round_alone_and_beside_busy_threads(tmp_path: Path) -> None:
    figures = tmp_path / "hand_offs.json"
    arguments = ["--workers", "2", "--frames", "8", "--rounds", "2", "--busy", "0", "1", "--repeats", "1"]
    result = subprocess.run(
        [sys.executable, "bench/hand_offs.py", *arguments, "--baseline", str(REPO), "--json", str(figures)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(figures.read_text())
    for checkout in ("ours", "baseline"):
        assert set(measured[checkout]) == {"0", "1"}
        assert all(figure["median_ms"] > 0 for figure in measured[checkout].values())
    assert "ours / baseline" in result.stdout
