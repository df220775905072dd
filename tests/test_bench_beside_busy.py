"""bench/hand_offs.py and bench/placing.py, which measure a batch's read round and its commit
stage beside busy Python (see watcher.pipeline.gil_held_pipes, watcher.intake.held_lookups), run:
a tiny run of each here, with this checkout as its own baseline, so that the scripts cannot rot
between the runs that quote them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("script", ["hand_offs", "placing"])
def test_bench_measures_a_stage_round_alone_and_beside_busy_threads(script: str, tmp_path: Path) -> None:
    figures = tmp_path / f"{script}.json"
    arguments = ["--workers", "2", "--frames", "8", "--rounds", "2", "--busy", "0", "1", "--repeats", "1"]
    result = subprocess.run(
        [sys.executable, f"bench/{script}.py", *arguments, "--baseline", str(REPO), "--json", str(figures)],
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
