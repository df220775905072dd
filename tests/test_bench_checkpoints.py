"""bench/harness.py's build_model shares one checkpoint of each kind between the benchmarks of a
run when CCTV_BENCH_CHECKPOINTS names a folder (bench/gpu.sh sets it), and builds one a benchmark
otherwise. The checkpoints are random-weight CLIPs built here: the pretrained weights cannot be
downloaded on this machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from transformers import CLIPModel

REPO = Path(__file__).resolve().parent.parent


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_harness", REPO / "bench" / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_checkpoint_of_a_kind_for_every_benchmark_while_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = _harness()
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv(harness.SHARED_CHECKPOINTS, str(shared))

    first = harness.build_model(tmp_path / "first" / "clip", "tiny")
    (first / "not-rebuilt").write_text("kept")
    second = harness.build_model(tmp_path / "second" / "clip", "tiny")

    assert second == first == shared / "tiny"
    assert (second / "not-rebuilt").exists(), "built a second time"
    assert [path.name for path in shared.iterdir()] == ["tiny"]  # nothing half-built left beside it
    assert not (tmp_path / "first").exists() and not (tmp_path / "second").exists()
    CLIPModel.from_pretrained(second)  # a whole checkpoint, loaded as the daemon loads one


def test_without_a_shared_folder_each_benchmark_builds_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = _harness()
    monkeypatch.delenv(harness.SHARED_CHECKPOINTS, raising=False)
    assert harness.build_model(tmp_path / "clip", "tiny") == tmp_path / "clip"
    CLIPModel.from_pretrained(tmp_path / "clip")
