"""bench/gpu_preflight.py, what bench/gpu.sh checks before its first step: the packages the steps
import (tests/test_bench_gpu_steps.py: a missing one stops the run) and a CUDA device when asked
for one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def preflight(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench/gpu_preflight.py", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_the_machine_is_named_for_the_summary() -> None:
    result = preflight("--device", "cpu")
    assert result.returncode == 0, result.stderr
    machine = json.loads(result.stdout)
    assert isinstance(machine, str) and machine


def test_cuda_asked_for_where_torch_sees_none_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = preflight("--device", "cuda")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--device cuda, but torch" in result.stderr
