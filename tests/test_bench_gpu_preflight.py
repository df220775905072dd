"""bench/gpu_preflight.py, what bench/gpu.sh checks before its first step: the packages the steps
import (tests/test_bench_gpu_steps.py: a missing one stops the run), a CUDA device when asked for
one, and what is already on the GPU. nvidia-smi cannot run
here: a script of that name on PATH answers as it would on a shared GPU."""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def preflight(*options: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "bench/gpu_preflight.py", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def preflight_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return importlib.import_module("gpu_preflight")


def fake_nvidia_smi(folder: Path, listed: str) -> str:
    """A PATH whose nvidia-smi lists `listed` as the GPU's compute processes (asked as nvidia-smi
    is documented to be asked; anything else fails)."""
    folder.mkdir()
    script = folder / "nvidia-smi"
    asked = '"$*" = "--query-compute-apps=pid,process_name,used_memory --format=csv,noheader"'
    script.write_text(f"#!/bin/sh\n[ {asked} ] || exit 9\nprintf '{listed}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return os.pathsep.join([str(folder), os.environ["PATH"]])


def test_processes_already_on_the_gpu_are_recorded_with_a_warning(tmp_path: Path) -> None:
    """Another process on the GPU makes every figure low: the run says so, and still runs."""
    listed = "4242, /usr/bin/python3, 30720 MiB\\n77, [Not Found], 512 MiB\\n"
    result = preflight("--device", "cpu", path=fake_nvidia_smi(tmp_path / "bin", listed))
    assert result.returncode == 0, result.stderr
    machine, processes = (json.loads(line) for line in result.stdout.splitlines())
    assert isinstance(machine, str) and machine
    assert processes == [
        {"pid": 4242, "process_name": "/usr/bin/python3", "used_memory": "30720 MiB"},
        {"pid": 77, "process_name": "[Not Found]", "used_memory": "512 MiB"},
    ]
    assert (
        "warning: already on the GPU at start" in result.stderr and "4242 /usr/bin/python3" in result.stderr
    )


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        pytest.param("", [], id="an_idle_gpu"),
        pytest.param("No running processes found\\n", [], id="its_words_for_none"),
        pytest.param("4242, python3, 30720 MiB\\n4243, cut sho", [4242], id="a_line_cut_short"),
    ],
)
def test_what_nvidia_smi_lists_is_read_as_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: str, expected: list[int]
) -> None:
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", listed))
    processes = preflight_module(monkeypatch).gpu_processes()
    assert processes is not None and [entry["pid"] for entry in processes] == expected


def test_without_nvidia_smi_the_gpu_s_processes_are_not_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert preflight_module(monkeypatch).gpu_processes() is None


def test_cuda_asked_for_where_torch_sees_none_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = preflight("--device", "cuda")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--device cuda, but torch" in result.stderr
